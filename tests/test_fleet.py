"""Several generation servers as one fleet (eval/backends/fleet.py, openai_server.py): the health rules on a clock
of the test's own, then the openai backend against local mock servers, one of them killed mid-run."""

from __future__ import annotations

import threading

import pytest
from helpers import counters, wait_until

from eval.backends import fleet as fleet_module
from eval.backends.base import BackendUnavailable, GenerationRequest, Sampling
from eval.backends.fleet import COOLDOWN_S, EJECT_AFTER, OUTS_TO_GIVE_UP, Fleet
from eval.config import MockSettings, OpenAIModel
from eval.records import Slot


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(fleet: Fleet, server, times: int = 1) -> None:
    for _ in range(times):
        fleet.release(server)
        fleet.failed(server, "APIConnectionError: Connection error.")


def test_the_server_with_fewest_requests_in_flight_takes_the_next_one_and_a_request_avoids_where_it_failed():
    fleet = Fleet(["a", "b", "c"], Clock())
    taken = [fleet.take(avoid=set()).url for _ in range(3)]
    assert taken == ["a", "b", "c"]
    fleet.release(fleet.servers[1])
    fleet.answered(fleet.servers[1])
    assert fleet.take(avoid=set()).url == "b"  # b has nothing in flight now
    assert fleet.take(avoid={0, 1}).url == "c"  # the only one this request did not fail on
    assert fleet.take(avoid=set()).url == "a"  # a and b have one in flight, c two; a was sent fewer
    assert fleet.take(avoid={0, 1, 2}) is None


def test_a_failing_server_leaves_the_rotation_is_tried_again_alone_and_comes_back_when_it_answers():
    clock = Clock()
    fleet = Fleet(["a", "b"], clock)
    a, b = fleet.servers
    for _ in range(EJECT_AFTER):
        assert fleet.take(avoid={1}) is a
        fail(fleet, a)
    assert a.taken_out == 1 and fleet.take(avoid=set()) is b  # out of rotation: b takes everything
    assert fleet.take(avoid={1}) is None
    assert fleet.seconds_until_trial() == COOLDOWN_S
    clock.now += COOLDOWN_S
    assert fleet.take(avoid={1}) is a  # on trial: one request at a time
    assert fleet.take(avoid={1}) is None
    fail(fleet, a)  # the trial failed: out again, for twice as long
    assert a.taken_out == 2 and fleet.seconds_until_trial() == 2 * COOLDOWN_S and not fleet.down
    clock.now += 2 * COOLDOWN_S
    trial = fleet.take(avoid={1})
    fleet.release(trial)
    fleet.answered(trial)
    assert a.back_at is None and [fleet.take(avoid={1}) for _ in range(2)] == [a, a]  # back in full rotation
    assert a.counts() == {"url": "a", "sent": 7, "answered": 1, "failed": 4, "refused": 0, "taken_out": 2,
                          "in_rotation": True}


def test_an_error_about_the_request_says_the_server_is_up_and_an_answer_sent_before_it_left_changes_nothing():
    clock = Clock()
    fleet = Fleet(["a"], clock)
    (a,) = fleet.servers
    for _ in range(EJECT_AFTER - 1):
        fail(fleet, fleet.take(avoid=set()))
    fleet.take(avoid=set())
    fleet.release(a)
    fleet.refused(a)  # a 400 or 429: answered, so the failures in a row start again
    for _ in range(EJECT_AFTER - 1):
        fail(fleet, fleet.take(avoid=set()))
    assert a.back_at is None
    in_flight = [fleet.take(avoid=set()) for _ in range(3)]
    fail(fleet, in_flight[0])
    assert a.taken_out == 1
    fail(fleet, in_flight[1])  # sent before it left: counted, but the time out is not extended
    assert a.taken_out == 1 and a.failed == 2 * EJECT_AFTER


def test_the_fleet_is_down_once_every_server_failed_its_trials():
    clock = Clock()
    fleet = Fleet(["a", "b"], clock)
    for server in fleet.servers:
        for _ in range(EJECT_AFTER):
            fail(fleet, fleet.take(avoid={1 - server.index}))
    assert not fleet.down and not fleet.any_usable()  # both out, neither tried again yet
    for trial in range(1, OUTS_TO_GIVE_UP):
        clock.now += COOLDOWN_S * 2 ** (trial - 1)
        fail(fleet, fleet.take(avoid=set()))
        assert not fleet.down  # b has not had this trial yet
        fail(fleet, fleet.take(avoid=set()))
    assert fleet.down and fleet.seconds_until_trial() > 0
    clock.now += 10 * COOLDOWN_S
    assert fleet.down  # for good: the run stops generating
    assert fleet.down_message() == ("no generation server answers: a (APIConnectionError: Connection error.); "
                                    "b (APIConnectionError: Connection error.)")


# ---------------------------------------------------------------- the openai backend over several servers


def _requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(Slot(1, "t", str(i), 1), [{"role": "user", "content": f"question {i}"}],
                              Sampling(0.7, 0.95, 256), 100 + i) for i in range(n)]


def _backend(servers, **settings):
    from eval.backends.openai_server import OpenAIServerBackend

    return OpenAIServerBackend(OpenAIModel(backend="openai", path="mock-gen", base_urls=[s.url for s in servers],
                                           **settings))


def _generate(backend, requests) -> dict:
    results = {}
    backend.generate(requests, lambda r: results.__setitem__(r.request.slot.item_id, r))
    return results


def test_load_follows_what_each_server_has_in_flight_not_the_request_index(mock_server):
    slow, fast = mock_server(settings=MockSettings(latency_s=0.5)), mock_server()
    results = _generate(_backend([slow, fast], concurrency=2), _requests(20))
    assert len(results) == 20 and {r.parsed.status for r in results.values()} == {"ok"}
    # Index round-robin gives each 10, two at a time to the slow one; here the fast one takes a request whenever it
    # is free, and the slow one only when it has nothing in flight.
    assert counters(slow)["max_in_flight"] == 1 and counters(fast)["requests"] > counters(slow)["requests"]


def test_a_server_killed_mid_run_leaves_every_answer_to_the_survivor(mock_server):
    survivor, victim = (mock_server(settings=MockSettings(latency_s=0.03)) for _ in range(2))
    backend = _backend([survivor, victim], concurrency=6)
    killer = threading.Thread(target=lambda: wait_until(lambda: counters(victim).get("requests", 0) >= 8) and victim.kill())
    killer.start()
    results = _generate(backend, _requests(60))
    killer.join()
    assert len(results) == 60 and {r.parsed.status for r in results.values()} == {"ok"}
    first, second = backend.servers()
    assert second["failed"] >= 1 and second["taken_out"] >= 1 and not second["in_rotation"]
    assert first["answered"] + second["answered"] == 60 and first["failed"] == 0 and first["in_rotation"]


def test_a_dead_server_costs_one_attempt_per_request_not_the_sdks_retries(mock_server, monkeypatch):
    """The clients make one attempt each (max_retries=0): a refused connection moves the request on at once."""
    import openai

    made = []
    real = openai.AsyncOpenAI.__init__
    monkeypatch.setattr(openai.AsyncOpenAI, "__init__", lambda self, **kw: made.append(kw["max_retries"]) or real(self, **kw))
    dead = mock_server()
    dead.kill()
    alive = mock_server()
    backend = _backend([dead, alive], concurrency=2, max_retries=3)
    results = _generate(backend, _requests(10))
    assert {r.parsed.status for r in results.values()} == {"ok"} and made == [0, 0]
    down, up = backend.servers()
    assert down["sent"] == down["failed"] == EJECT_AFTER and down["taken_out"] == 1
    assert up["answered"] == 10


def test_a_single_server_with_passing_errors_is_asked_again_after_a_backoff(mock_server, monkeypatch):
    from eval.backends import openai_server

    waits = []
    monkeypatch.setattr(openai_server, "_backoff", lambda failures, error: waits.append(failures) or 0.0)
    monkeypatch.setattr(fleet_module, "EJECT_AFTER", 100)  # the server stays in rotation: the retries alone
    server = mock_server(settings=MockSettings(rate_503=0.3, seed=7))  # one request at a time: the same faults each time
    backend = _backend([server], concurrency=1, max_retries=6)
    results = _generate(backend, _requests(20))
    assert {r.parsed.status for r in results.values()} == {"ok"}
    assert counters(server)["503"] == len(waits) > 0  # each failed attempt waited before the same server got it again
    flaky = _generate(_backend([server], concurrency=1, max_retries=0), _requests(40))
    failed = [r for r in flaky.values() if r.parsed.status == "error"]
    assert failed and all("InternalServerError" in r.error for r in failed)  # no attempts left: the answer is an error


def test_when_no_server_answers_the_backend_stops_with_one_line_and_keeps_what_was_answered(mock_server, monkeypatch):
    monkeypatch.setattr(fleet_module, "COOLDOWN_S", 0.05)
    servers = [mock_server(settings=MockSettings(latency_s=0.03)) for _ in range(2)]
    backend = _backend(servers, concurrency=4)
    killer = threading.Thread(target=lambda: wait_until(lambda: counters(servers[0]).get("requests", 0) >= 6)
                              and [s.kill() for s in servers])
    killer.start()
    stored = []
    with pytest.raises(BackendUnavailable) as stopped:
        backend.generate(_requests(60), stored.append)
    killer.join()
    message = str(stopped.value)
    assert "\n" not in message and all(s.url in message for s in servers) and "Connection error" in message
    answered = [r for r in stored if r.parsed.status == "ok"]
    assert answered and len(stored) < 60  # the rest was never sent, so nothing is stored for it
    assert all(r.error and "Connection error" in r.error for r in stored if r.parsed.status != "ok")
    before = len(stored)
    with pytest.raises(BackendUnavailable):  # a later turn of the same run sends nothing
        backend.generate(_requests(3), stored.append)
    assert len(stored) == before
