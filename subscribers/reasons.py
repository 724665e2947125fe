"""Why a message failed, as one of a closed set of reasons, and whose problem that is.

The vocabulary follows sisimai's (https://libsisimai.org/en/reason/), which names what bounce
reports mean across mail systems. The rules here are our own: the server's words first (they
say more than "5.0.0"), read in an order where the specific beats the general, then the
RFC 3463 status code (subject and detail, as the IANA registry of enhanced status codes
describes them), then what the report's Action says.

Each reason has a side, and the side decides the policy (`subscribers.reports`):
- GONE: the address no longer exists: suppress at once.
- READER: a problem at the reader's end that may pass (a full mailbox): counts as soft.
- SENDER: a problem with *our* sending (blocklisted, authentication, content): the reader is
  not touched; the run raises an alarm for staff instead.
- NONE: nothing to do (a complaint is handled as such, an auto-reply, a delivery).
"""

from __future__ import annotations

import enum
import re

__all__ = ["GONE", "READER", "SENDER", "Reason", "Side", "decide", "side_of"]


class Reason(enum.StrEnum):
    USERUNKNOWN = "userunknown"  # no such mailbox
    HOSTUNKNOWN = "hostunknown"  # no such domain or host
    HASMOVED = "hasmoved"  # the mailbox moved, no forwarding
    NOTACCEPT = "notaccept"  # the domain accepts no mail (null MX)
    MAILBOXFULL = "mailboxfull"
    EXCEEDLIMIT = "exceedlimit"  # over the recipient's own size or count limit
    SUSPEND = "suspend"  # the account is disabled or suspended
    FILTERED = "filtered"  # the recipient's own rules refused it (sisimai's name)
    EXPIRED = "expired"  # gave up after retrying for days
    SYSTEMERROR = "systemerror"  # the receiving system failed
    NETWORKERROR = "networkerror"  # DNS or routing trouble on the way
    BLOCKED = "blocked"  # our IP or host refused: blocklists, reputation, reverse DNS
    AUTHFAILURE = "authfailure"  # SPF, DKIM or DMARC failed
    SPAMDETECTED = "spamdetected"
    POLICYVIOLATION = "policyviolation"  # the content or form broke a policy (RFC 5322, attachments)
    VIRUSDETECTED = "virusdetected"
    MESGTOOLARGE = "mesgtoolarge"  # the message is larger than the server takes
    REJECTED = "rejected"  # our envelope sender refused
    NORELAYING = "norelaying"
    SECURITYERROR = "securityerror"  # TLS or authentication required
    SYNTAXERROR = "syntaxerror"  # the server did not understand our SMTP
    TOOMANYCONN = "toomanyconn"
    RATELIMITED = "ratelimited"
    FEEDBACK = "feedback"  # a complaint
    VACATION = "vacation"  # an auto-reply
    DELIVERED = "delivered"  # a success notice
    UNDEFINED = "undefined"


class Side(enum.StrEnum):
    GONE = "gone"
    READER = "reader"
    SENDER = "sender"
    NONE = "none"


GONE = frozenset({Reason.USERUNKNOWN, Reason.HOSTUNKNOWN, Reason.HASMOVED})
READER = frozenset(
    {
        Reason.MAILBOXFULL,
        Reason.EXCEEDLIMIT,
        Reason.SUSPEND,
        Reason.FILTERED,
        Reason.EXPIRED,
        Reason.SYSTEMERROR,
        Reason.NETWORKERROR,
        Reason.NOTACCEPT,
        Reason.UNDEFINED,
    }
)
SENDER = frozenset(
    {
        Reason.BLOCKED,
        Reason.AUTHFAILURE,
        Reason.SPAMDETECTED,
        Reason.POLICYVIOLATION,
        Reason.VIRUSDETECTED,
        Reason.MESGTOOLARGE,
        Reason.REJECTED,
        Reason.NORELAYING,
        Reason.SECURITYERROR,
        Reason.SYNTAXERROR,
        Reason.TOOMANYCONN,
        Reason.RATELIMITED,
    }
)


def side_of(reason: Reason, *, permanent: bool = False) -> Side:
    """Whose problem a failure is. A permanent `notaccept` (null MX) means the address is gone."""
    if reason in GONE or (reason == Reason.NOTACCEPT and permanent):
        return Side.GONE
    if reason in SENDER:
        return Side.SENDER
    if reason in READER:
        return Side.READER
    return Side.NONE


# --- the server's words ------------------------------------------------------------------------
# In this order: the first that matches decides. Specific before general: "Recipient address
# rejected: message content looks like spam" is spam, not an unknown user; an SPF failure that
# mentions spam is an authentication failure.
_WORDS: tuple[tuple[Reason, str], ...] = (
    (Reason.VACATION, r"\b(i am|i'm) (away|out of (the )?office)|\bon vacation\b|auto(matic)?[- ]reply"),
    # A local delivery program's failure, whatever words it printed.
    (
        Reason.SYSTEMERROR,
        r"^x-unix;|procmail|command (died|failed)|mailer error|pipe to \||ldap server|directory server",
    ),
    # Trouble on the way there (a DNS answer that makes no sense, a loop) reads like an unknown
    # host or an expiry, but it is the network's.
    (
        Reason.NETWORKERROR,
        r"name server reply|dns query failed|mail (forwarding )?loop|routing loop|too many hops|"
        r"host not found, try again|"
        r"hop count exceeded|"
        r"wasn't able to establish an smtp connection|could not connect and send",
    ),
    (
        Reason.NOTACCEPT,
        r"couldn't find a mail exchanger|no mail exchanger|null ?mx|does not accept mail|"
        r"doesn't receive email",
    ),
    (Reason.NETWORKERROR, r"\bdns error\b"),  # Google's: a lookup failed, which may pass
    (
        Reason.EXPIRED,
        r"message expired|delivery (time )?expired|will be retried for|"
        r"did not accept our requests to connect",
    ),
    (Reason.HOSTUNKNOWN, r"the account or domain may not exist"),
    # A refusal that names a reputation problem or our HELO is about our host.
    (
        Reason.BLOCKED,
        r"unexpected volume or user complaints|my name was rejected|use the smtp server of your isp|"
        r"ip name lookup failed|may not be mail exchanger|"
        # our sending IP is not one our domain may send from, or has a poor name
        r"unverifi?yable sending ips?|mismatches client ip|invalid ip for sending|"
        r"(low|\bip) reputation|which is an open relay",
    ),
    (Reason.POLICYVIOLATION, r"content presents a potential"),
    # SMTP AUTH wanted from us (a relay), not SPF or DKIM
    (Reason.SECURITYERROR, r"unauthenticated senders? not allowed|turn on smtp authentication"),
    (
        Reason.POLICYVIOLATION,
        r"not (rfc ?5322|rfc ?2822|rfc) compliant|rfcmessagenoncompliant|protocol violation",
    ),
    # Exim's words for a recipient address in our message it could not parse.
    (
        Reason.SYNTAXERROR,
        r"malformed address:|angle-brackets nested too deep|expected word or \"<\"|"
        r"domain missing in source-routed address",
    ),
    (
        Reason.TOOMANYCONN,
        r"connection rate limit|too many (connections|concurrent)|(ip|connection) frequency limited",
    ),
    (
        Reason.MAILBOXFULL,
        r"mailbox (is )?full|full mailbox|mail ?box.{0,20}(over|exceed\w*) (its )?(quota|storage|size|disk)|"
        r"over ?quota|quota (exceeded|usage exceeded)|(exceed\w*|over) (the |their |its )?(mailbox |disk |"
        r"storage )?quota|"
        r"insufficient (disk|storage)|not enough (storage|space|disk)|no space left|out of storage|"
        r"storage (space|allocation)|mailfolder is full|disk ?quota|user.{0,10}full|"
        r"boite du destinataire pleine|mailbox exceeds allowed size|recipient's mailbox exceeded",
    ),
    (
        Reason.MESGTOOLARGE,
        r"message (size|length) exceeds|(message|mail|file) (is )?too (big|large)|size (limit|exceed)|"
        r"exceeds? (the )?(maximum|fixed) (message )?size|max(imum)? message size|message file too big|"
        r"line limit exceeded|taille limite",
    ),
    (
        Reason.SUSPEND,
        r"suspend|account (is |has been )?(disabled|locked|frozen|inactive|deactivated|terminated)|"
        r"mailbox (is )?(disabled|inactive|frozen)|(inactive|disabled|deactivated) (account|mailbox|user)|"
        r"tried to reach is (disabled|inactive)|user is terminated|temporarily inactive|"
        r"temporar(il)?y locked|"
        r"no longer (active|accepts? mail)|archived recipient",
    ),
    (
        Reason.HASMOVED,
        r"has (been )?moved|has been replaced by|no longer (at|with) |changed (his|her|its) address",
    ),
    (
        Reason.NORELAYING,
        r"relay(ing)? (access )?(denied|not (permitted|allowed))|not (permitted|allowed) to relay|"
        r"unable to relay|(not an?|insecure) (open )?(mail )?relay|no relaying|as a relay|"
        r"not configured to relay|relaying mail to|we don't handle mail for",
    ),
    (
        Reason.AUTHFAILURE,
        r"\bspf\b|sender policy framework|\bdkim\b|\bdmarc\b|unauthenticated (sender|e?mail|message)|"
        r"does not have authentication information|fails to pass authentication|"
        r"sender is unauthenticated|not allowed to send (mail )?from|authentication results?:",
    ),
    # A blocklisting names the list (often a spam list): our IP is refused, not the content.
    (
        Reason.BLOCKED,
        r"blocked using|(?<!not )listed (at|in|on|by)|block ?list|black ?list|\bdnsbl\b|\brbl\b|"
        r"spamhaus|spamcop|"
        r"bad reputation|poor reputation|reputation (score|problem)",
    ),
    (
        Reason.VIRUSDETECTED,
        r"virus|malware|infected|potentially executable|executable (attachment|content)|phishing",
    ),
    (
        Reason.SPAMDETECTED,
        r"\bspam(?!haus|cop)|unsolicited|bulk (e-?mail|mail|advertising)|junk mail|content filter|"
        r"message content (rejected|denied)|mail content denied|message filtered|"
        r"banned content|looks? like spam|uribl|spamassassin|"
        r"message rejected due to suspected|classified as bulk",
    ),
    (
        Reason.POLICYVIOLATION,
        r"not (rfc ?5322|rfc ?2822|rfc) compliant|rfcmessagenoncompliant|(local |"
        r"organi[sz]ation )?policy (violation|reasons)|"
        r"denied by policy|illegal attachment|attachments? (are |is )?not (allowed|accepted)|"
        r"header (error|are not accepted)|duplicate header|invalid mime|members-only list|"
        r"closed mailing list|"
        r"improper use of 8-bit|multiple (subject|from|to|date|message-id) headers?|"
        r"organizational settings|not accepting mail with",
    ),
    (
        Reason.REJECTED,
        r"sender (address )?(rejected|was rejected|denied|verify failed|is (in|on) .{0,20}(black|"
        r"block) ?list)|"
        r"domain of sender address|sender domain (is empty|must exist|not found|does not exist)|"
        r"(invalid|bogus|unroutable|unverified) sender|from: domain is invalid|"
        r"email address is not verified|mail from not owned|null sender is not allowed|"
        r"empty envelope senders? not allowed|batv|sender not pre-approved|"
        r"envelope blocked|returned mail not accepted|isn't on the recipient's list of senders|"
        r"not a registered gateway user",
    ),
    (
        Reason.FILTERED,
        r"user (reject|refuses)|refuse[sd]? to (receive|accept)|recipient preferences|user rules|"
        r"only accepting mail from specific|blocked by the recipient|has restricted|"
        r"not accepting any mail|resolver\.rst\.notauthorized|this account is protected|"
        r"extended inactivity",
    ),
    (
        Reason.USERUNKNOWN,
        r"user ?unknown|unknown (user|recipient|mailbox|address|local ?part)|"
        r"no such (user|recipient|mailbox|address|person|account)|"
        r"(user|recipient|mailbox|address|account|e-?mail account)( \S+)? (does ?n[o']t|did not) exist|"
        r"(user|recipient|mailbox|address|account) (not found|not exist|doesn't exist|missing)|"
        r"invalid (recipient|mailbox|address|user)|not a valid (mailbox|recipient|user|address)|"
        r"(is )?not a known user|recipient not found|mailbox (not found|unavailable|not present|invalid)|"
        r"bad destination mailbox|no mailbox|unrouteable address|unknown or illegal alias|"
        r"address (unknown|invalid|does not exist|not present)|recipient (address )?rejected: (unknown|"
        r"invalid|user|access denied)|"
        r"recipientnotfound|recipient not ?found|mailbox is unavailable|no account by that name|"
        r"no one (at|with) this address|not listed in|we do not relay|bad recipient|"
        r"destination addresses? (were|was) unknown|is not an active address|user doesn't have a|"
        r"does not have an account|no such local user|not a local address|sorry, badrcptto|"
        r"email address (could not be found|does not exist)|address wasn.t found|"
        r"wasn.t found at the destination",
    ),
    (
        Reason.NOTACCEPT,
        r"null ?mx|does not accept mail|host/domain does not accept|mail receiving disabled|"
        r"no mx record",
    ),
    (
        Reason.HOSTUNKNOWN,
        r"host (or domain name )?(not found|unknown)|unknown host|domain (not found|does not exist|"
        r"must exist|is not reachable)|"
        r"no such domain|name or service not known|name service error|unrouteable mail domain|"
        r"unknown domain|domain (name )?(is )?(invalid|unknown)|recipient domain must exist|"
        r"host unreachable|mail domain mentioned in email address is unknown",
    ),
    (
        Reason.RATELIMITED,
        r"rate limit|rate-limit|try again slower|at a rate that prevents|sending rate|"
        r"temporarily deferred due to unexpected volume|throttl|too many (messages|emails|mails)",
    ),
    (
        Reason.TOOMANYCONN,
        r"too many (connections|concurrent|smtp sessions|recipients|errors)|connection limit|"
        r"maximum connection",
    ),
    (
        Reason.BLOCKED,
        r"block ?list|black ?list|blocked|\brbl\b|dnsbl|spamhaus|spamcop|reputation|"
        r"\bptr\b|reverse (dns|lookup)|\brdns\b|cannot find your hostname|ip name lookup failed|"
        r"helo command rejected|client host rejected|dynamic ip|banned sending ip|"
        r"not (currently )?accepting (mail|connections) from|not accepting connections|"
        r"connection (refused|dropped|reset)|"
        r"go away|you are not allowed to connect|poor reputation|sender ip address rejected",
    ),
    (
        Reason.SECURITYERROR,
        r"starttls|tls (is )?required|encryption (is )?(needed|required)|authentication (is )?required|"
        r"authentication (credentials invalid|failure)|not authorized to send|must authenticate",
    ),
    (
        Reason.NETWORKERROR,
        r"mail (forwarding )?loop|routing loop|too many hops|hop count exceeded|no route to host|"
        r"host is unreachable|name server reply|host name lookup failure|network error on destination|"
        r"dns records .{0,40}could not be found|"
        r"unable to resolve",
    ),
    (
        Reason.EXPIRED,
        r"expired|timed? ?out|retry time|too long in (the )?queue|in the queue too long|"
        r"could not be delivered for|delivery attempts will continue|has been delayed|"
        r"giving up on|unable to deliver .{0,30}after|failing for a long time|not reachable within|"
        r"delivery failed \d+ attempts|could not deliver for the last",
    ),
    (
        Reason.SYSTEMERROR,
        r"system (config(uration)? )?error|local (configuration )?error|internal (server )?error|"
        r"temporary local problem|mailer error|command (died|failed)|procmail|mail system|"
        r"queue file write error|server (is )?misconfigured|service (is )?(currently )?unavailable|"
        r"loops back to myself|mx (points|loops)|could not load drd|local error in processing|"
        r"can't create user output file|interrupted system call|timeout waiting for input|"
        r"error while being processed|there is no mdb",
    ),
    (
        Reason.SYNTAXERROR,
        r"syntax error|command unrecognized|unrecognized command|command not (implemented|recognized)|"
        r"bad sequence of commands|improper sequence|command parameter not implemented",
    ),
)
WORD_RULES = tuple((reason, re.compile(pattern, re.I)) for reason, pattern in _WORDS)

# --- the status code ---------------------------------------------------------------------------
# Subject.detail -> reason, by the meaning RFC 3463 and the IANA registry give each code.
_BY_CODE: dict[str, Reason] = {
    "1.0": Reason.USERUNKNOWN,
    "1.1": Reason.USERUNKNOWN,
    "1.2": Reason.HOSTUNKNOWN,
    "1.3": Reason.USERUNKNOWN,
    "1.4": Reason.FILTERED,
    "1.6": Reason.HASMOVED,
    "1.7": Reason.REJECTED,
    "1.8": Reason.REJECTED,
    "1.9": Reason.SYSTEMERROR,
    "1.10": Reason.NOTACCEPT,
    "2.0": Reason.FILTERED,
    "2.1": Reason.SUSPEND,
    "2.2": Reason.MAILBOXFULL,
    "2.3": Reason.EXCEEDLIMIT,
    "2.4": Reason.FILTERED,
    "3.0": Reason.SYSTEMERROR,
    "3.1": Reason.SYSTEMERROR,
    "3.2": Reason.NOTACCEPT,
    "3.3": Reason.SYSTEMERROR,
    "3.4": Reason.MESGTOOLARGE,
    "3.5": Reason.SYSTEMERROR,
    "4.0": Reason.NETWORKERROR,
    "4.1": Reason.EXPIRED,
    "4.2": Reason.NETWORKERROR,
    "4.3": Reason.SYSTEMERROR,
    "4.4": Reason.HOSTUNKNOWN,
    "4.5": Reason.SYSTEMERROR,
    "4.6": Reason.NETWORKERROR,
    "4.7": Reason.EXPIRED,
    "5.1": Reason.SYNTAXERROR,
    "5.2": Reason.SYNTAXERROR,
    "5.3": Reason.TOOMANYCONN,
    "5.4": Reason.SYSTEMERROR,
    "5.5": Reason.SYSTEMERROR,
    "6.0": Reason.POLICYVIOLATION,
    "6.1": Reason.POLICYVIOLATION,
    "6.2": Reason.POLICYVIOLATION,
    "6.3": Reason.POLICYVIOLATION,
    "6.5": Reason.POLICYVIOLATION,
    "6.6": Reason.POLICYVIOLATION,
    "7.0": Reason.SECURITYERROR,
    "7.1": Reason.SECURITYERROR,
    "7.2": Reason.SECURITYERROR,
    "7.3": Reason.SECURITYERROR,
    "7.4": Reason.SECURITYERROR,
    "7.5": Reason.SECURITYERROR,
    "7.6": Reason.SECURITYERROR,
    "7.7": Reason.SECURITYERROR,
    "7.8": Reason.SECURITYERROR,
    "7.9": Reason.SECURITYERROR,
    "7.10": Reason.SECURITYERROR,
    "7.11": Reason.SECURITYERROR,
    "7.14": Reason.SECURITYERROR,
    "7.15": Reason.SECURITYERROR,
    "7.19": Reason.SECURITYERROR,
    "7.30": Reason.SECURITYERROR,
    "7.13": Reason.SUSPEND,
    "7.16": Reason.MESGTOOLARGE,
    "7.17": Reason.HASMOVED,
    "7.18": Reason.HASMOVED,
    "7.20": Reason.AUTHFAILURE,
    "7.21": Reason.AUTHFAILURE,
    "7.22": Reason.AUTHFAILURE,
    "7.23": Reason.AUTHFAILURE,
    "7.24": Reason.AUTHFAILURE,
    "7.25": Reason.BLOCKED,
    "7.26": Reason.AUTHFAILURE,
    "7.27": Reason.NOTACCEPT,
    "7.28": Reason.SPAMDETECTED,
    "7.29": Reason.AUTHFAILURE,
}
# Codes vague enough that the words, when they say anything, decide instead.
_VAGUE = frozenset({"0.0", "0.9", "2.0", "3.0", "4.0", "5.0", "7.0", "7.1", "1.0"})
# Codes specific enough to decide even against the words.
_DECISIVE = frozenset({"2.2", "2.3", "1.6", "7.26", "7.23", "7.20", "7.25", "7.27", "7.13"})


def by_code(status: str) -> Reason | None:
    if not status or status[:1] not in "45":
        return None
    detail = status.split(".", 1)[1]
    reason = _BY_CODE.get(detail)
    if reason is None and status.startswith("4.") and detail.split(".")[0] == "7":
        return Reason.BLOCKED  # 4.7.x: a temporary refusal of us (greylisting, reputation)
    return reason


def by_words(text: str) -> Reason | None:
    for reason, pattern in WORD_RULES:
        if pattern.search(text):
            return reason
    return None


def decide(status: str, diagnostic: str, *, action: str = "") -> Reason:
    """The reason for one recipient's failure from its status code, the server's words and the
    report's Action field."""
    if status.startswith("2."):
        return Reason.DELIVERED
    detail = status.split(".", 1)[1] if "." in status else ""
    if detail in _DECISIVE:
        return _BY_CODE[detail]
    words = by_words(diagnostic) if diagnostic else None
    if words is not None:
        return words
    code = by_code(status)
    if code is not None and detail not in _VAGUE:
        return code
    if action.startswith(("delayed", "expired")):
        return Reason.EXPIRED
    return code or Reason.UNDEFINED


# Google's old text reports end the server's reply with "(state N)", the SMTP stage Google
# was at; when the words say nothing, the stage does (sisimai's Lhost/Gmail reads them so).
_GMAIL_STATE_RE = re.compile(r"google tried to deliver your message.*\(state (\d{1,2})\)", re.I | re.S)
_GMAIL_STATES = {
    "6": Reason.SYSTEMERROR,  # MAIL: the server does not speak TLS
    "8": Reason.SYSTEMERROR,  # AUTH failed
    "9": Reason.SYSTEMERROR,  # AUTH: TLS certificate trouble
    "12": Reason.NORELAYING,  # AUTH: no authenticated relay
    "13": Reason.BLOCKED,  # EHLO/MAIL: Google's server refused
    "14": Reason.USERUNKNOWN,  # RCPT
    "15": Reason.FILTERED,  # DATA
    "17": Reason.FILTERED,  # DATA
    "18": Reason.FILTERED,  # DATA
}


def by_gmail_state(text: str) -> Reason | None:
    """The reason Google's "(state N)" stage implies, if the text is such a report."""
    found = _GMAIL_STATE_RE.search(text)
    return _GMAIL_STATES.get(found.group(1)) if found else None


# sisimai names outside our closed set, and what each is here (for reading its results).
SISIMAI_EQUIVALENT = {
    "mesgtoobig": Reason.MESGTOOLARGE,
    "requireptr": Reason.BLOCKED,
    "badreputation": Reason.BLOCKED,
    "notcompliantrfc": Reason.POLICYVIOLATION,
    "contenterror": Reason.POLICYVIOLATION,
    "mailererror": Reason.SYSTEMERROR,
    "systemfull": Reason.SYSTEMERROR,
    "speeding": Reason.RATELIMITED,
    "onhold": Reason.UNDEFINED,
}


def from_name(name: str) -> Reason:
    """A reason from its name, sisimai's own included; UNDEFINED for anything else."""
    name = name.strip().lower()
    if name in SISIMAI_EQUIVALENT:
        return SISIMAI_EQUIVALENT[name]
    try:
        return Reason(name)
    except ValueError:
        return Reason.UNDEFINED
