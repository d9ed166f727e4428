"""E-mail through SMTP (``smtplib``): one message per event and recipient, plain text, over STARTTLS or
implicit TLS with certificate verification, unless configured off for a local relay."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from broker.notifications import cloudevent
from broker.notifications.config import SmtpConfig
from broker.notifications.errors import DeliveryFailed


def message(event: Mapping[str, Any], sender: str, recipient: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = cloudevent.subject_line(event)
    msg["Date"] = formatdate(float(event["at"]), usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=str(event["id"]), domain=sender.rsplit("@", 1)[-1])
    msg["X-DR-Event-Type"] = event["type"]
    msg["X-DR-Event-Id"] = event["id"]
    msg.set_content(cloudevent.text(event))
    return msg


class SmtpSender:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.config.ca_file)

    def send(self, recipient: str, event: Mapping[str, Any]) -> None:
        c = self.config
        try:
            if c.ssl:
                server: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self._context())
            else:
                server = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            with server:
                if c.starttls:
                    server.starttls(context=self._context())
                if c.username and c.password:
                    server.login(c.username, c.password)
                refused = server.send_message(message(event, c.sender, recipient))
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryFailed("the SMTP server refused the recipient") from None
        except smtplib.SMTPAuthenticationError:
            raise DeliveryFailed("SMTP authentication failed (DRBROKER_SMTP_USERNAME/PASSWORD)") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"SMTP {exc.smtp_code}") from None
        except ssl.SSLError:
            raise DeliveryFailed("TLS: the SMTP server's certificate did not verify") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"SMTP connection failed: {type(exc).__name__}") from None
        if refused:
            raise DeliveryFailed("the SMTP server refused the recipient")
