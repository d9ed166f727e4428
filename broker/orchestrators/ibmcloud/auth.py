"""The authenticator the ibmcloud backend signs every call with.

The broker's own API key (``IAMAuthenticator``), or, with a trusted profile id, that key assuming the
trusted profile the customer created in their account (``IAMAssumeAuthenticator``: IAM first issues the
broker's token, then exchanges it for the profile's). Both cache the token and refresh it before it
expires; ``errors.call`` also drops it after a 401 (a token IAM revoked early).
"""

from __future__ import annotations

from ibm_cloud_sdk_core.authenticators import Authenticator, IAMAssumeAuthenticator, IAMAuthenticator

from broker.orchestrators.ibmcloud.config import IbmCloudConfig


def make_authenticator(config: IbmCloudConfig) -> Authenticator:
    iam_url = config.endpoints.url("iam")
    if config.trusted_profile_id:
        auth: Authenticator = IAMAssumeAuthenticator(config.apikey, iam_profile_id=config.trusted_profile_id,
                                                     url=iam_url)
    else:
        auth = IAMAuthenticator(config.apikey, url=iam_url)
    auth.token_manager.http_config = {"timeout": config.timeout_seconds}  # type: ignore[attr-defined]
    return auth
