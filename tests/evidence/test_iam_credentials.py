"""The IAM API-key path of the COS client: ibm_boto3 trades the key for a token at the (fake, real-process) IAM
and sends it to the S3 server; a key IAM refuses fails with a message that does not contain the key."""

from __future__ import annotations

import pytest

from broker.evidence.cos import Bucket, CosConfig, CosError
from tests.e2e.conftest import fake_ibmcloud  # noqa: F401  (the real-process fake IBM Cloud)
from tests.evidence.conftest import s3


def config(moto_url: str, bucket: str, iam: str, apikey: str) -> CosConfig:
    return CosConfig.from_env({"DRBROKER_COS_ENDPOINT": moto_url, "DRBROKER_COS_BUCKET": bucket,
                               "DRBROKER_COS_APIKEY": apikey, "DRBROKER_COS_INSTANCE_CRN": "crn:v1:cos-instance",
                               "DRBROKER_COS_AUTH_ENDPOINT": f"{iam}/identity/token"})


def test_an_iam_api_key_is_exchanged_for_a_token(moto_url: str, bucket: str, fake_ibmcloud: str) -> None:  # noqa: F811
    good = Bucket(config(moto_url, bucket, fake_ibmcloud, "a-valid-cos-writer-api-key"))
    assert good.put_once("drb/probe.json", b"{}")
    assert s3(moto_url).get_object(Bucket=bucket, Key="drb/probe.json")["Body"].read() == b"{}"
    assert repr(good.config).count("a-valid-cos-writer-api-key") == 0
    bad = Bucket(config(moto_url, bucket, fake_ibmcloud, "invalid-cos-api-key-0001"))
    with pytest.raises(CosError) as caught:
        bad.put_once("drb/probe-2.json", b"{}")
    assert "invalid-cos-api-key-0001" not in str(caught.value)
