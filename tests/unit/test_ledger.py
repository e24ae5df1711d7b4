"""The per-runner ledger of work: waits in tokens, batching on slots, rates learnt from what the gateway sees."""

from __future__ import annotations

import pytest

from corral.domain.ledger import Ledger

TPOT = 0.01  # seconds per output token, one sequence alone
PREFILL = 0.001  # seconds per prompt token
NONE = (0, 0.0)


def test_a_free_slot_behind_long_prompts_is_not_free() -> None:
    ledger = Ledger()
    short, long = Ledger(), Ledger()
    short.dispatched("n", "m", 100, 50, 0.0, ready=True)
    long.dispatched("n", "m", 16_000, 50, 0.0, ready=True)
    # One request ahead, four slots: a slot is free on both, but the long prompt must be prefilled first.
    assert short.wait("n", "m", 4, TPOT, PREFILL, 0.0, NONE) == pytest.approx(0.1)
    assert long.wait("n", "m", 4, TPOT, PREFILL, 0.0, NONE) == pytest.approx(16.0)
    assert ledger.wait("n", "m", 4, TPOT, PREFILL, 0.0, NONE) == 0.0


def test_with_every_slot_taken_the_wait_is_the_work_ahead_not_the_count() -> None:
    small, big = Ledger(), Ledger()
    for ledger, output in ((small, 10), (big, 1000)):
        for _ in range(2):
            ledger.dispatched("n", "m", 0, output, 0.0, ready=True)
            ledger.started("n", "m", 0.0)
    # One slot, one request running and one queued: the second waits for both to be done with a slot.
    assert small.wait("n", "m", 1, TPOT, PREFILL, 0.0, NONE) == pytest.approx(0.2)
    assert big.wait("n", "m", 1, TPOT, PREFILL, 0.0, NONE) == pytest.approx(20.0)


def test_batching_makes_each_sequence_slower_but_the_runner_faster() -> None:
    one_slot, four_slots = Ledger(batching=0.35), Ledger(batching=0.35)
    for ledger in (one_slot, four_slots):
        for _ in range(8):
            ledger.dispatched("n", "m", 0, 100, 0.0, ready=True)
    serial = one_slot.wait("n", "m", 1, TPOT, PREFILL, 0.0, NONE)
    batched = four_slots.wait("n", "m", 4, TPOT, PREFILL, 0.0, NONE)
    # Eight requests of 1 s each: one slot frees after all eight (8 s); four slots run four at a time,
    # each 2.05x slower, and free one after five of the eight have had their share.
    assert serial == pytest.approx(8.0)
    assert batched == pytest.approx(8 * 1.0 * 2.05 * 5 / (8 * 4))
    assert batched < serial


def test_running_requests_count_only_what_is_left_of_them() -> None:
    ledger = Ledger()
    ledger.dispatched("n", "m", 0, 1000, 0.0, ready=True)
    ledger.started("n", "m", 0.0)
    assert ledger.wait("n", "m", 1, TPOT, PREFILL, 0.0, NONE) == pytest.approx(10.0)
    assert ledger.wait("n", "m", 1, TPOT, PREFILL, 6.0, NONE) == pytest.approx(4.0)


def test_requests_the_ledger_was_not_told_of_count_as_typical_ones() -> None:
    ledger = Ledger()
    # Two requests in flight that another path sent (a restart, a test's snapshot): 3 s each, one slot.
    assert ledger.wait("n", "m", 1, TPOT, PREFILL, 0.0, (2, 3.0)) == pytest.approx(6.0)


def test_rates_are_learnt_from_first_and_last_tokens() -> None:
    ledger = Ledger(learn_rate=0.5)
    assert ledger.tpot("m", 0.05) == 0.05 and ledger.prefill("m", 0.002) == 0.002
    ledger.dispatched("n", "m", 1000, 200, 0.0, ready=True)
    ledger.started("n", "m", 0.5)  # nothing ahead on a ready runner: 0.5 s for 1,000 prompt tokens
    ledger.finished("n", "m", 2.0)  # 200 tokens alone in 2 s
    assert ledger.prefill("m", 0.002) == pytest.approx(0.0005)
    assert ledger.tpot("m", 0.05) == pytest.approx(0.01)
    assert ledger.ahead("n", "m") == 0


def test_a_load_it_did_not_see_does_not_teach_a_slow_gpu() -> None:
    ledger = Ledger(learn_rate=0.5)
    for t, ttft in ((0.0, 0.5), (10.0, 60.0)):  # the second waited for a load the router took for done
        ledger.dispatched("n", "m", 1000, 10, t, ready=True)
        ledger.started("n", "m", t + ttft)
        ledger.finished("n", "m", 0.1)
    assert ledger.prefill("m", 1.0) <= 4 * 0.0005


def test_a_non_streamed_answer_teaches_no_decode_rate() -> None:
    ledger = Ledger()
    ledger.dispatched("n", "m", 10, 100, 0.0, ready=True)
    ledger.started("n", "m", 30.0, timed=False)  # its head came with the whole answer
    ledger.finished("n", "m", 30.0)
    assert ledger.tpot("m", 0.02) == 0.02


def test_finished_requests_leave_even_without_a_report() -> None:
    ledger = Ledger()
    for t in range(3):
        ledger.dispatched("n", "m", 100, 100, float(t), ready=True)
    ledger.sync("n", "m", 1)  # the gateway counts one left in flight: two ended without `finished`
    assert ledger.ahead("n", "m") == 1
    ledger.sync("n", "m", 0)
    assert ledger.ahead("n", "m") == 0 and ledger.runners() == 0


def test_answers_that_overtake_each_other_are_matched_by_their_length() -> None:
    ledger = Ledger(learn_rate=1.0)
    ledger.dispatched("n", "m", 0, 10, 0.0, ready=True)
    ledger.started("n", "m", 0.0)
    ledger.finished("n", "m", 0.1)  # teaches 0.01 s per token
    ledger.dispatched("n", "m", 0, 1000, 1.0, ready=True)
    ledger.dispatched("n", "m", 0, 10, 1.0, ready=True)
    ledger.started("n", "m", 1.0)
    ledger.started("n", "m", 1.0)
    ledger.finished("n", "m", 0.135)  # the short one, batched with the long one (1.35x slower)
    assert ledger.wait("n", "m", 1, 0.01, PREFILL, 1.0, NONE) == pytest.approx(10.0)


def test_a_request_cut_short_is_forgotten_by_its_expected_length_and_teaches_nothing() -> None:
    ledger = Ledger(learn_rate=1.0)
    for output in (50, 50, 50, 100_000):
        ledger.dispatched("n", "m", 0, output, 0.0, ready=True)
        ledger.started("n", "m", 0.0)
    # The long stream's client left: its entry goes, not the shortest one, and no rate is learnt.
    ledger.finished("n", "m", 0.0, output=100_000)
    # Behind the three short ones on one slot: seconds (with the long one left: 1,000 s).
    assert ledger.wait("n", "m", 1, TPOT, PREFILL, 0.0, NONE) < 5.0
    assert ledger.tpot("m", TPOT) == TPOT
    # The next short answer is matched to a short entry, and teaches its own rate.
    ledger.finished("n", "m", 0.5)
    assert ledger.tpot("m", TPOT) == pytest.approx(0.5 / 50 / (1 + 0.35 * 2))


def test_an_error_answer_is_forgotten_among_the_requests_not_yet_started() -> None:
    ledger = Ledger()
    ledger.dispatched("n", "m", 0, 100, 0.0, ready=True)
    ledger.started("n", "m", 0.0)  # the first one is answering
    ledger.dispatched("n", "m", 0, 100, 0.0, ready=True)  # the second got a 503: no first token
    ledger.finished("n", "m", 0.0, output=100, started=False)
    # The running one stays, and the next first token is a new request's, not the failed one's: the
    # ledger is then as if the failed request had never been sent.
    ledger.dispatched("n", "m", 0, 100, 1.0, ready=True)
    ledger.started("n", "m", 1.0)
    clean = Ledger()
    for at in (0.0, 1.0):
        clean.dispatched("n", "m", 0, 100, at, ready=True)
        clean.started("n", "m", at)
    assert ledger.wait("n", "m", 2, TPOT, PREFILL, 1.0, NONE) == clean.wait("n", "m", 2, TPOT, PREFILL, 1.0, NONE)


def test_runners_not_heard_of_for_an_hour_are_forgotten() -> None:
    ledger = Ledger()
    ledger.dispatched("gone", "m", 100, 100, 0.0, ready=True)
    ledger.dispatched("here", "m", 100, 100, 3000.0, ready=True)
    ledger.prune(3700.0, 3600.0)
    assert ledger.ahead("gone", "m") == 0 and ledger.ahead("here", "m") == 1
