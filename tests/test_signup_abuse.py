"""Sign-up abuse: subscription bombing, per-client limits across processes, the durable queue,
and what the confirm page shows the owner."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, text, update
from subscriber_helpers import TEST_SECRET, confirm_link, csrf_from

from digest.config import config_from_dict
from digest.db import session_factory
from digest.web import create_app
from subscribers import store
from subscribers.store import SignupJob, Status

pytest_plugins = ("subscriber_fixtures",)

REDIS_URL = "redis://127.0.0.1:6379/0"


def make_config(name: str = "Statecraft Weekly", **web):
    return config_from_dict({"newsletter": {"name": name, "base_url": "http://localhost"}, "web": web})


def post_form(client, email, *, name="", regions=(), **kwargs):
    page = client.get("/subscribe", **kwargs)
    data = {"email": email, "name": name, "region": list(regions), "csrf_token": csrf_from(page.text)}
    return client.post("/subscribe", data=data, **kwargs)


def variants(n: int) -> list[str]:
    """One mailbox, spelt n ways: +tags and case."""
    shapes = ["victim@example.org", "Victim@Example.org", "VICTIM@EXAMPLE.ORG", "victim+{i}@example.org"]
    shapes += ["Victim+News{i}@example.org", "vIcTiM+{i}@ExAmPlE.oRg"]
    return [shapes[i % len(shapes)].format(i=i) for i in range(n)]


def gmail_variants(n: int) -> list[str]:
    """One Gmail inbox, spelt n ways: dots moved, googlemail.com, +tags and case."""
    shapes = ["jane.doe@gmail.com", "janedoe@googlemail.com", "J.a.n.e.D.o.e@GMail.com"]
    shapes += ["jane.doe+{i}@googlemail.com", "jan.edoe+x{i}@gmail.com", "JaneDoe@GoogleMail.com"]
    return [shapes[i % len(shapes)].format(i=i) for i in range(n)]


def test_gmail_aliases_share_one_mailbox_limit(db_engine):
    """Issue 19, finding 10: dots moved and googlemail.com counted as other mailboxes, so one
    inbox got 18 confirmation mails; it gets the limit's 2."""
    outbox: list = []
    app = create_app(
        make_config(subscribe_limit_per_client=1000),
        db_engine,
        secret_key=TEST_SECRET,
        send_mail=outbox.append,
    )
    client = app.test_client()
    assert all(post_form(client, email).status_code == 200 for email in gmail_variants(18))
    app.extensions["digest.mail"].join()
    assert [m["To"].addresses[0].addr_spec for m in outbox] == [
        "jane.doe@gmail.com",
        "janedoe@googlemail.com",
    ]
    # Another Gmail inbox and a dotted address at a provider that keeps dots are not held back.
    for email in ("janedoe2@gmail.com", "jane.doe@example.org", "janedoe@example.org"):
        assert post_form(client, email).status_code == 200
    app.extensions["digest.mail"].join()
    assert len(outbox) == 5


@pytest.mark.parametrize("per_client", [10, 1000], ids=["client-limit-10", "client-limit-off"])
def test_subscription_bombing_sends_at_most_two_mails(db_engine, per_client):
    """50 requests for one mailbox, across +tag and case variants, each with a forged
    X-Forwarded-For behind one trusted proxy: at most 2 confirmation mails, whatever the
    per-client limit lets through."""
    outbox: list = []
    app = create_app(
        make_config(trusted_proxies=1, subscribe_limit_per_client=per_client),
        db_engine,
        secret_key=TEST_SECRET,
        send_mail=outbox.append,
    )
    client = app.test_client()
    codes = []
    for i, email in enumerate(variants(50)):
        # The attacker writes any X-Forwarded-For; the proxy (REMOTE_ADDR 10.0.0.1) appends the
        # address it saw. Only that last hop is trusted.
        forged = f"203.0.113.{i}, 198.51.100.{i % 7}"
        codes.append(
            post_form(
                client,
                email,
                headers={"X-Forwarded-For": f"{forged}, 192.0.2.50"},
                environ_base={"REMOTE_ADDR": "10.0.0.1"},
            ).status_code
        )
    app.extensions["digest.mail"].join()
    assert len(outbox) == 2
    accepted = codes.count(200)
    if per_client == 10:
        # The forged hops did not make 50 clients: one client, 10 attempts, then 429.
        assert codes == [200] * 10 + [429] * 40
    else:
        assert accepted == 50
    with session_factory(db_engine)() as s:
        stored = {sub.email for sub in store.list_subscribers(s)}
    # Each distinct address is stored as typed (domain lower-cased); only the limit merges them.
    assert {"victim@example.org", "victim+3@example.org", "Victim+News4@example.org"} <= stored
    assert [m["To"].addresses[0].addr_spec for m in outbox] == ["victim@example.org"] * 2


def test_the_mailbox_limit_holds_across_app_instances_and_frees_after_the_window(db_engine):
    clock = {"now": datetime(2030, 1, 1, 9, 0, tzinfo=UTC)}
    outbox: list = []

    def app():
        return create_app(
            make_config(),
            db_engine,
            secret_key=TEST_SECRET,
            send_mail=outbox.append,
            clock=lambda: clock["now"],
        )

    first, second = app(), app()
    for a, email in (
        (first, "reader+a@example.org"),
        (second, "READER@example.org"),
        (first, "reader@example.org"),
    ):
        post_form(a.test_client(), email)
        a.extensions["digest.mail"].join()
    assert len(outbox) == 2
    clock["now"] += timedelta(hours=23, minutes=59)
    post_form(second.test_client(), "reader+b@example.org")
    second.extensions["digest.mail"].join()
    assert len(outbox) == 2
    clock["now"] += timedelta(minutes=2)
    post_form(second.test_client(), "reader+b@example.org")
    second.extensions["digest.mail"].join()
    assert len(outbox) == 3


def test_429_carries_retry_after(db_engine):
    app = create_app(
        make_config(subscribe_limit_per_client=1), db_engine, secret_key=TEST_SECRET, send_mail=list().append
    )
    client = app.test_client()
    assert post_form(client, "a@example.org").status_code == 200
    refused = post_form(client, "b@example.org")
    assert refused.status_code == 429
    assert "too many attempts" in refused.text.lower()
    assert int(refused.headers["Retry-After"]) > 0
    app.extensions["digest.mail"].join()


def test_without_trusted_proxies_forwarded_headers_are_ignored(db_engine):
    app = create_app(
        make_config(subscribe_limit_per_client=2), db_engine, secret_key=TEST_SECRET, send_mail=list().append
    )
    client = app.test_client()
    codes = [
        post_form(client, f"r{i}@example.org", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]
    app.extensions["digest.mail"].join()


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_newsletter():
    """A newsletter name of its own (the limiter's key prefix), and its keys removed afterwards."""
    if not redis_answers():
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    import redis

    name = f"Limiter Test {uuid.uuid4().hex[:8]}"
    yield name
    r = redis.Redis.from_url(REDIS_URL)
    slug = name.lower().replace(" ", "-")
    for key in r.scan_iter(f"*{slug}*"):
        r.delete(key)
    r.close()


def test_per_client_limit_on_redis_holds_across_app_instances(db_engine, redis_newsletter):
    """Two processes (app instances) and a restart (a third one) share the count in Redis."""
    outbox: list = []

    def app():
        config = make_config(redis_newsletter, subscribe_limit_per_client=3, limiter_url=REDIS_URL)
        return create_app(config, db_engine, secret_key=TEST_SECRET, send_mail=outbox.append)

    one, two = app(), app()
    env = {"environ_base": {"REMOTE_ADDR": "198.51.100.77"}}
    codes = [
        post_form(one.test_client(), "a@example.org", **env).status_code,
        post_form(two.test_client(), "b@example.org", **env).status_code,
        post_form(one.test_client(), "c@example.org", **env).status_code,
        post_form(two.test_client(), "d@example.org", **env).status_code,
    ]
    assert codes == [200, 200, 200, 429]
    restarted = app()
    assert post_form(restarted.test_client(), "e@example.org", **env).status_code == 429
    other = {"environ_base": {"REMOTE_ADDR": "198.51.100.78"}}
    assert post_form(restarted.test_client(), "f@example.org", **other).status_code == 200
    # In memory, each instance would have counted alone:
    memory = create_app(
        make_config(redis_newsletter, subscribe_limit_per_client=3),
        db_engine,
        secret_key=TEST_SECRET,
        send_mail=outbox.append,
    )
    assert post_form(memory.test_client(), "g@example.org", **env).status_code == 200
    for a in (one, two, restarted, memory):
        a.extensions["digest.mail"].join()


# --- the queue ---------------------------------------------------------------------------


def jobs(engine) -> list[SignupJob]:
    with session_factory(engine)() as s:
        return list(s.scalars(select(SignupJob).order_by(SignupJob.id)))


def test_a_queued_sign_up_survives_a_crash_before_the_worker_ran(db_engine):
    outbox: list = []
    crashed = create_app(
        make_config(), db_engine, secret_key=TEST_SECRET, send_mail=outbox.append, process_queue=False
    )
    resp = post_form(crashed.test_client(), "survivor@example.org", name="Sur Vivor", regions=["Europe"])
    assert resp.status_code == 200 and "Check your inbox" in resp.text
    (job,) = jobs(db_engine)
    assert (job.email, job.done_at, job.attempts) == ("survivor@example.org", None, 0)
    assert outbox == []
    del crashed  # the process dies here; only the database remains

    restarted = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=outbox.append)
    restarted.extensions["digest.mail"].join()
    assert [m["To"].addresses[0].addr_spec for m in outbox] == ["survivor@example.org"]
    (job,) = jobs(db_engine)
    assert job.done_at is not None and job.attempts == 1
    with session_factory(db_engine)() as s:
        sub = store.get_by_email(s, "survivor@example.org")
        assert (sub.status, sub.name, sub.regions) == (Status.PENDING, "Sur Vivor", {"Europe"})
    # Handled once: another restart sends nothing more.
    again = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=outbox.append)
    again.extensions["digest.mail"].join()
    assert len(outbox) == 1


def test_a_job_claimed_by_a_dead_process_is_taken_over_once_stale(db_engine):
    clock = {"now": datetime(2030, 1, 1, 9, 0, tzinfo=UTC)}
    outbox: list = []

    def app(**kw):
        return create_app(
            make_config(),
            db_engine,
            secret_key=TEST_SECRET,
            send_mail=outbox.append,
            clock=lambda: clock["now"],
            **kw,
        )

    post_form(app(process_queue=False).test_client(), "midway@example.org")
    with session_factory(db_engine).begin() as s:  # a worker claimed it, then its process died
        s.execute(update(SignupJob).values(claimed_at=clock["now"], attempts=1))
    clock["now"] += timedelta(minutes=5)
    soon = app()
    soon.extensions["digest.mail"].join()
    assert outbox == []  # it may still be running somewhere
    clock["now"] += timedelta(minutes=6)
    later = app()
    later.extensions["digest.mail"].join()
    assert [m["To"].addresses[0].addr_spec for m in outbox] == ["midway@example.org"]
    assert jobs(db_engine)[0].attempts == 2


def test_the_subscribe_request_does_one_insert_and_no_lookup(db_engine):
    """Before the page is answered: only the INSERT into the queue, nothing that reads the
    subscriber tables, so the answer cannot depend on the address."""
    app = create_app(
        make_config(), db_engine, secret_key=TEST_SECRET, send_mail=list().append, process_queue=False
    )
    client = app.test_client()
    token = csrf_from(client.get("/subscribe").text)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(" ".join(statement.split()).upper())

    event.listen(db_engine, "before_cursor_execute", record)
    try:
        for email in ("known@example.org", "new@example.org"):
            assert client.post("/subscribe", data={"email": email, "csrf_token": token}).status_code == 200
    finally:
        event.remove(db_engine, "before_cursor_execute", record)
    writes = [s for s in statements if not s.startswith(("SELECT", "BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"))]
    assert len(writes) == 2 and all(s.startswith("INSERT INTO SIGNUP_JOBS") for s in writes)
    assert not any("SUBSCRIBERS" in s or "SUPPRESSIONS" in s for s in statements)


def test_a_failed_job_is_kept_and_retried(db_engine):
    calls: list = []

    def flaky(message):
        calls.append(message)
        if len(calls) == 1:
            raise OSError("relay down")

    # No worker thread: the test runs the passes itself, one at a time.
    app = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=flaky, process_queue=False)
    assert post_form(app.test_client(), "retry@example.org").status_code == 200
    queue = app.extensions["digest.mail"]
    assert queue.process_pending() == 0
    (job,) = jobs(db_engine)
    assert job.done_at is None and job.claimed_at is None and job.last_error == "OSError: relay down"
    assert queue.process_pending() == 1  # the next pass tries it again
    (job,) = jobs(db_engine)
    assert job.done_at is not None and job.attempts == 2 and len(calls) == 2


# --- the confirm page --------------------------------------------------------------------


def test_confirm_page_shows_what_the_form_asked_for_escaped(db_engine):
    outbox: list = []
    app = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=outbox.append)
    client = app.test_client()
    with session_factory(db_engine).begin() as s:
        sub = store.add_subscriber(s, "owner@example.org", name="Owner", regions={"Asia-Pacific"})
        store.unsubscribe(s, sub, source="test")
    post_form(client, "owner@example.org", name='<b>Eve</b> & "[x]"', regions=["Africa", "Europe"])
    app.extensions["digest.mail"].join()
    page = client.get(confirm_link(outbox[0]).replace("http://localhost", ""))
    assert page.status_code == 200
    assert "You are subscribing as <strong>&lt;b&gt;Eve&lt;/b&gt; &amp; &#34;[x]&#34;</strong>" in page.text
    assert "<strong>Africa, Europe</strong>" in page.text
    assert "<b>Eve</b>" not in page.text
    with session_factory(db_engine)() as s:  # shown, not applied
        sub = store.get_by_email(s, "owner@example.org")
        assert (sub.name, sub.regions, sub.status) == ("Owner", {"Asia-Pacific"}, Status.UNSUBSCRIBED)


def test_confirm_page_for_a_request_without_name_or_regions(db_engine):
    outbox: list = []
    app = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=outbox.append)
    client = app.test_client()
    post_form(client, "plain@example.org")
    app.extensions["digest.mail"].join()
    page = client.get(confirm_link(outbox[0]).replace("http://localhost", ""))
    assert "You are subscribing without a name" in page.text and "<strong>every region</strong>" in page.text
    with session_factory(db_engine)() as s:
        assert s.scalar(text("SELECT count(*) FROM confirmation_mails")) == 1


def test_limiter_falls_back_to_memory_when_redis_is_gone(db_engine):
    from site_helpers import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(
        make_config(subscribe_limit_per_client=2, limiter_url=dead),
        db_engine,
        secret_key=TEST_SECRET,
        send_mail=list().append,
    )
    client = app.test_client()
    codes = [post_form(client, f"r{i}@example.org").status_code for i in range(3)]
    assert codes == [200, 200, 429]
    app.extensions["digest.mail"].join()


def test_two_processes_working_one_queue_still_send_at_most_two(db_engine):
    """Two app instances (two processes' workers) drain one queue at once: each job is handled
    by one of them, and the per-mailbox count is taken under a lock, so still 2 mails."""
    from concurrent.futures import ThreadPoolExecutor

    outbox: list = []
    apps = [
        create_app(
            make_config(subscribe_limit_per_client=100),
            db_engine,
            secret_key=TEST_SECRET,
            send_mail=outbox.append,
            process_queue=False,
        )
        for _ in range(2)
    ]
    client = apps[0].test_client()
    for email in variants(20):
        assert post_form(client, email).status_code == 200
    queues = [a.extensions["digest.mail"] for a in apps]
    with ThreadPoolExecutor(max_workers=2) as pool:
        handled = sum(pool.map(lambda q: q.process_pending(), queues))
    handled += queues[0].process_pending()  # anything a busy database made fail, once more
    assert handled == 20
    assert len(outbox) == 2
    assert all(j.attempts >= 1 and j.done_at is not None for j in jobs(db_engine))
