"""Report shapes the shared corpus lacks, written here after the mail systems that send them
(OpenSMTPD, X1, KDDI/au, Lotus Notes, Zoho, Verizon's MMS gateway): text reports with no
delivery-status part, which neither the DSN fields nor flufl.bounce read."""

from __future__ import annotations

import pytest

from subscribers.bounces import Kind, classify


def _mail(
    sender: str, subject: str, body: str, *, to: str = "news@example.org", charset: str = "us-ascii"
) -> bytes:
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
    head += f'Content-Type: text/plain; charset="{charset}"\r\n\r\n'
    return head.encode() + body.replace("\n", "\r\n").encode(
        charset if charset != "iso-2022-jp" else "iso-2022-jp"
    )


CASES = {
    "opensmtpd": (
        _mail(
            "MAILER-DAEMON@mx.example.net",
            "Delivery status notification: error",
            "    Hi!\n\n    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n"
            "    An error has occurred while attempting to deliver a message for\n"
            "    the following list of recipients:\n\n"
            "reader@gone.example: Domain does not exist\n\n"
            "    Below is a copy of the original message:\n\n"
            "From: news@example.org\nTo: other@example.com\n\nHello\n",
        ),
        ("reader@gone.example", "hostunknown", True),
    ),
    "x1": (
        _mail(
            '"Mail Deliver System" <MAILER-DAEMON@mx.example.jp>',
            "Returned Mail: User unknown",
            "The original message was received at Thu, 29 Apr 2010 23:34:45 +0900\nfrom news@example.org\n\n"
            "---The following addresses had delivery errors---\n\nreader@example.co.jp [User unknown]\n",
        ),
        ("reader@example.co.jp", "userunknown", True),
    ),
    "kddi": (
        _mail(
            "no-reply@mx.dion.example.jp",
            "=?ISO-2022-JP?B?GyRCJWEhPCVrJSglaSE8RExDThsoQg==?=",
            "\u9001\u4fe1\u5148\u306e\u30e1\u30fc\u30eb\u30dc\u30c3\u30af\u30b9\u304c\u4e00\u676f\u3067\u3059\u3002\n\n"
            "Your mail sent on: Thu, 29 Apr 2013 23:45:22 +0900\n"
            "     Could not be delivered to: <reader@dion.example.jp>\n     As their mailbox is full.\n",
            charset="iso-2022-jp",
        ),
        ("reader@dion.example.jp", "mailboxfull", False),
    ),
    "lotus-notes": (
        _mail(
            "postmaster@notes.example.co.jp",
            "Undeliverable message",
            "------- Failure Reasons  --------\n\nUser not listed in public Name & Address Book\n"
            "reader@notes.example.co.jp\n\n------- Returned Message --------\nFrom: news@example.org\n"
            "To: reader@notes.example.co.jp\n\nHello\n",
        ),
        ("reader@notes.example.co.jp", "userunknown", True),
    ),
    "zoho": (
        _mail(
            "mailer-daemon@mail.zoho.example",
            "Undelivered Mail Returned to Sender",
            "This message was created automatically by mail delivery software.\n\n"
            "reader@example.co.jp Invalid Address, ERROR_CODE :550, "
            "ERROR_CODE :5.1.1 <reader@example.co.jp>... "
            "User Unknown\n\n\nReceived:from mail.zoho.example by mx.zohomail.example\n"
            "Message-ID:<14a3e1b4b5a.10b1a4c5610175.8588386083425091336@zoho.example.com>\n"
            "From:News <news@example.org>\nTo:<reader@example.co.jp>\n",
        ),
        ("reader@example.co.jp", "userunknown", True),
    ),
    "verizon-mms": (
        _mail(
            "MMSC NDR Administrator <sysadmin@mms.example.com>",
            "Undeliverable Message",
            "Message could not be delivered to mobile.\nError: No valid recipients for this MM\n\n\n"
            "Original Message:\nFrom: News <news@example.org>\n"
            "To: 5550100@mms.example.com\nSubject: This week\n",
        ),
        ("5550100@mms.example.com", None, None),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_text_reports_of_other_mail_systems(name):
    raw, (address, reason, hard) = CASES[name]
    report = classify(raw)
    assert report.error == ""
    assert [f.address for f in report.findings] == [address]  # and no one else (Zoho: not the ids)
    (finding,) = report.findings
    assert finding.kind == Kind.BOUNCE
    if reason is not None:
        assert (finding.reason, finding.hard) == (reason, hard), finding


def test_an_ses_bounce_in_its_sns_envelope_is_read():
    """An SNS "email-json" subscription mails SNS's own JSON envelope; the SES notification is a
    string in its Message field, and the mail folds its long lines."""
    import json

    notification = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": "reader@example.net",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
        },
        "mail": {"commonHeaders": {"messageId": "<run1.7.abcdefghijklmnopqrst@news.example.org>"}},
    }
    envelope = {
        "Type": "Notification",
        "MessageId": "02f86d9b-eecf-573d-b47d-3d1850750c30",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:ses-bounces",
        "Message": json.dumps(notification),
    }
    text = json.dumps(envelope, indent=2)
    folded = "\n ".join(text[i : i + 300] for i in range(0, len(text), 300))  # as the mail folds it
    report = classify(_mail("no-reply@sns.amazonaws.com", "AWS Notification Message", folded))
    assert [(f.address, f.status, f.reason, f.hard, f.how) for f in report.findings] == [
        ("reader@example.net", "5.1.1", "userunknown", True, "SES notification (JSON)")
    ]
    assert "run1.7.abcdefghijklmnopqrst@news.example.org" in report.message_ids
