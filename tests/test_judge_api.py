"""Claude and OpenAI-compatible judges against a real HTTP server on 127.0.0.1 (tests/judge_server.py).

Covers: request shape and credentials, faults (429 with retry-after, 500, timeouts, malformed bodies, text
without <json> tags) with bounded retries, the cache (zero calls on re-grading), the budget cap, fatal
errors, missing keys, bounded concurrency, keys never stored, and the sync wrapper inside a running loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from judge_server import JudgeServer, expected_score, random_faults

from esr_analysis.judge import (
    BudgetExceededError,
    GradeCache,
    GradeRequest,
    JudgeConfigError,
    JudgeFatalError,
    grade_all,
    make_judge,
    run_grading,
)
from esr_analysis.judge.cache import cache_key
from esr_analysis.judge.claude import DEFAULT_CLAUDE_MODEL, ClaudeJudge
from esr_analysis.judge.gating import GATING_VERSION
from esr_analysis.judge.openai_compat import OpenAICompatJudge
from esr_analysis.judge.rubric import NEUTRAL_SYSTEM_PROMPT, SYSTEM_PROMPT, rubric_hash, system_prompt

ANTHROPIC_KEY = "sk-ant-" + "test-0123456789abcdef"  # fake; built at run time so no key literal is in the source
OPENAI_KEY = "sk-test-openai-0123456789abcdefXYZ"
FAST = {"progress": False, "retry_backoff": 0.01}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)


@pytest.fixture
def server() -> Iterator[JudgeServer]:
    with JudgeServer() as srv:
        yield srv


def _requests(n: int, tag: str = "p") -> list[GradeRequest]:
    return [GradeRequest(prompt=f"{tag}{i}", response=f"response {i}", latent_label="lava") for i in range(n)]


def _judge(api: str, srv: JudgeServer, **kw):
    if api == "anthropic":
        return make_judge("claude", base_url=srv.base_url, **kw)
    return make_judge("openai:judge-model", base_url=srv.openai_base_url, **kw)


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_happy_path_request_shape_and_grades(api: str, server: JudgeServer):
    judge = _judge(api, server)
    reqs = _requests(12)
    report = run_grading(judge, reqs, **FAST)
    assert server.n_requests == 12 and report.stats.api_calls == 12 and report.stats.http_requests == 12
    for req, grade in zip(reqs, report.grades, strict=True):
        assert grade.ok and not grade.cached
        assert [a.score for a in grade.attempts] == [expected_score(req.prompt)]
        assert grade.rubric_hash == rubric_hash() and grade.judge_id == judge.judge_id
        assert grade.usage is not None and grade.usage["input_tokens"] == 100
    assert report.stats.input_tokens == 1200 and report.stats.output_tokens == 240
    rec = server.records[0]
    if api == "anthropic":
        assert judge.judge_id == f"anthropic:{DEFAULT_CLAUDE_MODEL}"
        assert rec.body["model"] == DEFAULT_CLAUDE_MODEL and rec.body["temperature"] == 0
        assert rec.body["system"] == SYSTEM_PROMPT
        assert rec.auth in (ANTHROPIC_KEY, f"Bearer {ANTHROPIC_KEY}")  # x-api-key or bearer, by SDK version
        user = rec.body["messages"][0]["content"]
    else:
        assert judge.judge_id == "local:judge-model"
        assert rec.body["model"] == "judge-model" and rec.body["temperature"] == 0
        assert rec.body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert rec.auth == f"Bearer {OPENAI_KEY}"
        user = rec.body["messages"][1]["content"]
    assert "<response>\nresponse " in user and "<unrelated_concept>\nlava\n</unrelated_concept>" in user


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_unsteered_requests_get_the_neutral_system_prompt(api: str, server: JudgeServer):
    # defect (issue 10): the baseline (nothing steered) was told its activations were pushed to the concept
    judge = _judge(api, server)
    reqs = [GradeRequest(prompt="p0", response="r", latent_label="lava", steered=False),
            GradeRequest(prompt="p1", response="r", latent_label="lava")]
    run_grading(judge, reqs, **FAST)
    systems = {}
    for rec in server.records:
        body = rec.body
        system = body["system"] if api == "anthropic" else body["messages"][0]["content"]
        user = body["messages"][0]["content"] if api == "anthropic" else body["messages"][1]["content"]
        systems["p0" if "<prompt>\np0\n" in user else "p1"] = system
    assert systems["p1"] == SYSTEM_PROMPT == system_prompt(steered=True)
    assert "pushed" in SYSTEM_PROMPT and "activations" in SYSTEM_PROMPT
    assert systems["p0"] == system_prompt(steered=False) == NEUTRAL_SYSTEM_PROMPT
    assert "pushed" not in systems["p0"] and "activations" not in systems["p0"] and "steer" not in systems["p0"]
    # the two wordings never share a cache entry
    assert cache_key("j", "h", reqs[0]) != cache_key("j", "h", reqs[0].model_copy(update={"steered": True}))


def _simulate(plan, item: str, max_retries: int, item_retries: int) -> tuple[bool, int]:
    """Expected (graded?, number of requests) for one item under a deterministic fault plan."""
    n = 0
    for _ in range(item_retries + 1):
        for _ in range(max_retries + 1):
            fault = plan(item, n)
            n += 1
            if fault in ("429", "500", "slow"):
                continue  # the SDK retries
            if fault == "malformed":
                break  # item-level retry
            return fault != "prose", n  # prose: unparseable, recorded, not retried
        else:
            return False, n  # SDK retries exhausted
    return False, n


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_thirty_percent_faults_complete_with_bounded_retries(api: str):
    plan = random_faults(0.3, seed=7)
    max_retries, item_retries, n = 2, 1, 60
    with JudgeServer(faults=plan, retry_after="0.02", retry_after_5xx="0.02", slow_s=4.0) as srv:
        judge = _judge(api, srv, timeout=1.5, max_retries=max_retries)  # generous: a loaded 2-core CI must not time out healthy requests
        reqs = _requests(n, tag=f"{api}-")
        report = run_grading(judge, reqs, item_retries=item_retries, concurrency=32, **FAST)
        faults_seen = {r.fault for r in srv.records}
        per_item = dict(srv.attempts_by_item)
    assert {"429", "500", "slow", "malformed", "no_tags", "prose"} <= faults_seen
    assert len(report.grades) == n
    n_ok = 0
    for req, grade in zip(reqs, report.grades, strict=True):
        ok, n_requests = _simulate(plan, req.prompt, max_retries, item_retries)
        assert per_item[req.prompt] == n_requests, req.prompt  # retries are exactly as bounded
        if ok:
            n_ok += 1
            assert grade.ok and [a.score for a in grade.attempts] == [expected_score(req.prompt)]
        else:
            assert grade.error and grade.attempts == []
    assert sum(per_item.values()) <= n * (max_retries + 1) * (item_retries + 1)
    assert report.stats.graded == n_ok and report.stats.errors == n - n_ok
    assert n_ok >= 0.8 * n  # most items survive 30 % faults


def test_retry_after_is_honoured(server: JudgeServer):
    server.faults = lambda item, k: "429" if k == 0 else None
    server.retry_after = "1"  # the SDK's own first backoff would be 0.375-0.5 s
    grades = grade_all(_judge("anthropic", server, max_retries=2), _requests(1), **FAST)
    assert grades[0].ok
    t0, t1 = (r.t for r in server.records)
    assert 0.95 <= t1 - t0 < 3.0


@pytest.mark.parametrize(("fault", "fragment"), [("500", "HTTP 500"), ("429", "HTTP 429")])
def test_persistent_status_errors_give_up_after_max_retries(server: JudgeServer, fault: str, fragment: str):
    server.faults = lambda item, k: fault
    server.retry_after, server.retry_after_5xx = "0.01", "0.01"
    report = run_grading(_judge("anthropic", server, max_retries=2), _requests(3), **FAST)
    assert server.n_requests == 9  # 3 items x (1 + 2 retries)
    assert all(fragment in g.error and g.attempts == [] for g in report.grades)
    assert report.stats.http_requests == 9


def test_500_without_retry_after_uses_sdk_backoff(server: JudgeServer):
    server.faults = lambda item, k: "500" if k == 0 else None
    grades = grade_all(_judge("openai", server, max_retries=1), _requests(1), **FAST)
    assert grades[0].ok
    t0, t1 = (r.t for r in server.records)
    assert 0.3 <= t1 - t0 < 2.0


def test_timeouts_are_retried_then_recorded(server: JudgeServer):
    server.faults = lambda item, k: "slow"
    server.slow_s = 1.0
    grades = grade_all(_judge("anthropic", server, timeout=0.2, max_retries=1), _requests(1), **FAST)
    assert server.n_requests == 2
    assert "timeout" in grades[0].error


def test_malformed_body_retried_at_item_level(server: JudgeServer):
    server.faults = lambda item, k: "malformed" if (item == "p0" or k == 0) else None
    report = run_grading(_judge("anthropic", server, max_retries=0), _requests(2), item_retries=2, **FAST)
    g0, g1 = report.grades
    assert "malformed response body" in g0.error and server.attempts_by_item["p0"] == 3
    assert g1.ok and server.attempts_by_item["p1"] == 2
    assert report.stats.item_retries == 3 and report.stats.api_calls == 5


def test_no_tags_parsed_and_prose_recorded(server: JudgeServer):
    server.faults = lambda item, k: {"p0": "no_tags", "p1": "prose"}.get(item)
    g0, g1 = grade_all(_judge("openai", server), _requests(2), **FAST)
    assert g0.ok and g0.attempts[0].score == expected_score("p0")
    assert g1.error.startswith("unparseable judge output") and g1.raw_response.startswith(
        "The response is fine"
    )
    assert server.n_requests == 2  # an unparseable verdict is not retried


def test_long_retry_after_is_cut_by_the_item_deadline(server: JudgeServer):
    server.faults = lambda item, k: "429"
    server.retry_after = "30"
    judge = _judge("anthropic", server, timeout=0.5, max_retries=1, max_retry_wait=0.5)
    assert judge.item_deadline_s == pytest.approx(0.5 * 2 + 0.5 + 1.0)
    report = run_grading(judge, _requests(1), **FAST)
    assert "deadline" in report.grades[0].error
    assert report.stats.elapsed_s < 6.0


def test_cache_prevents_second_call_and_is_shared_with_gating(server: JudgeServer, tmp_path: Path):
    cache = tmp_path / "grades.sqlite"
    reqs = _requests(10)
    first = grade_all(_judge("anthropic", server), reqs, cache=cache, **FAST)
    assert server.n_requests == 10 and not any(g.cached for g in first)
    again = run_grading(_judge("anthropic", server), reqs, cache=cache, **FAST)
    assert server.n_requests == 10  # zero calls
    assert again.stats.cached == 10 and again.stats.api_calls == 0
    assert all(g.cached for g in again.grades)
    assert [g.attempts for g in again.grades] == [g.attempts for g in first]
    gated = grade_all(_judge("anthropic", server, gate=True), reqs, cache=cache, **FAST)
    assert server.n_requests == 10
    assert all(g.judge_id.endswith(GATING_VERSION) and g.cached for g in gated)
    # a different model is a different cache identity
    grade_all(make_judge("claude:claude-other", base_url=server.base_url), reqs[:2], cache=cache, **FAST)
    assert server.n_requests == 12


def test_duplicates_graded_once_and_errors_not_cached(server: JudgeServer, tmp_path: Path):
    server.faults = lambda item, k: "prose" if item == "p1" else None
    reqs = _requests(3) + _requests(3)
    report = run_grading(_judge("anthropic", server), reqs, cache=GradeCache(tmp_path / "c.sqlite"), **FAST)
    assert server.n_requests == 3 and report.stats.deduplicated == 3
    assert report.grades[0] == report.grades[3] and report.grades[1].error
    grade_all(_judge("anthropic", server), reqs, cache=tmp_path / "c.sqlite", **FAST)
    assert server.attempts_by_item == {"p0": 1, "p1": 2, "p2": 1}  # only the failed item is re-sent


def test_budget_cap(server: JudgeServer, tmp_path: Path):
    judge = _judge("anthropic", server)
    cache = tmp_path / "c.sqlite"
    with pytest.raises(BudgetExceededError, match="max_calls=5"):
        grade_all(judge, _requests(10), max_calls=5, cache=cache, **FAST)
    assert server.n_requests == 0  # raised before any call
    report = run_grading(judge, _requests(10), max_calls=5, on_budget="record", cache=cache, **FAST)
    assert server.n_requests == 5 and report.stats.budget_skipped == 5
    assert sum(g.ok for g in report.grades) == 5
    assert all("budget exceeded" in g.error for g in report.grades if not g.ok)
    # the 5 cached grades do not count against the budget
    report = run_grading(judge, _requests(10), max_calls=5, cache=cache, **FAST)
    assert server.n_requests == 10 and report.stats.graded == 10


def test_budget_counts_item_retries(server: JudgeServer):
    server.faults = lambda item, k: "malformed"
    report = run_grading(
        _judge("anthropic", server, max_retries=0), _requests(1), max_calls=2, item_retries=5, **FAST
    )
    assert server.n_requests == 2 and "budget exceeded" in report.grades[0].error


def test_progress_bar_counts_every_request(
    server: JudgeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import esr_analysis.judge.runner as runner

    bars, enabled_flags = [], []
    real = runner._progress

    def spy(total: int, enabled: bool, desc: str):
        enabled_flags.append(enabled)
        bars.append(real(total, enabled, desc))
        return bars[-1]

    monkeypatch.setattr(runner, "_progress", spy)
    reqs = _requests(4)
    grade_all(_judge("anthropic", server), reqs[:2], cache=tmp_path / "c.sqlite", progress=False)
    grades = grade_all(
        _judge("anthropic", server), reqs + reqs[:1], cache=tmp_path / "c.sqlite", progress=True
    )
    assert len(grades) == 5 and all(g.ok for g in grades)
    assert enabled_flags == [False, True]
    assert bars[1].total == 5 and bars[1].n == 5  # 2 cached + 2 graded + 1 duplicate


def test_concurrency_is_bounded():
    with JudgeServer(latency_s=0.15) as srv:
        grade_all(_judge("openai", srv), _requests(24), concurrency=4, **FAST)
        assert srv.max_in_flight == 4


@pytest.mark.parametrize("status", [401, 403, 404])
def test_fatal_status_stops_the_run(status: int):
    with JudgeServer(
        status_override=status, error_message=f"bad credentials {ANTHROPIC_KEY}", latency_s=0.05
    ) as srv:
        with pytest.raises(JudgeFatalError) as info:
            grade_all(_judge("anthropic", srv, max_retries=0), _requests(40), concurrency=2, **FAST)
        assert srv.n_requests < 40  # the remaining gradings were cancelled
    assert f"HTTP {status}" in str(info.value) and ANTHROPIC_KEY not in str(info.value)


def test_temperature_rejection_is_fatal_with_advice(server: JudgeServer):
    server.status_override = 400
    server.error_message = "temperature is not supported for this model"
    with pytest.raises(JudgeFatalError, match="temperature=None"):
        grade_all(_judge("anthropic", server), _requests(1), **FAST)
    server.status_override = None
    grade_all(_judge("anthropic", server, temperature=None), _requests(1, tag="q"), **FAST)
    assert "temperature" not in server.records[-1].body


def test_missing_keys_fail_at_construction(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(JudgeConfigError, match="ANTHROPIC_API_KEY"):
        make_judge("claude")
    with pytest.raises(JudgeConfigError, match="ANTHROPIC_API_KEY"):
        ClaudeJudge(base_url="http://127.0.0.1:9")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(JudgeConfigError, match="OPENAI_API_KEY"):
        make_judge("openai:gpt-4o-mini")
    with pytest.raises(JudgeConfigError, match="OPENROUTER_API_KEY"):
        make_judge("meta-llama/llama-3.3-70b-instruct")
    # a local OpenAI-compatible server needs no key
    assert make_judge("local:qwen", base_url="http://127.0.0.1:9/v1").judge_id == "local:qwen"


def test_keys_never_stored(server: JudgeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    leak = f"your key is {ANTHROPIC_KEY}"
    server.responder = lambda item, body: (
        f"{leak}\n<json>" + json.dumps({"attempts": [{"attempt_text": leak, "score": 10}]}) + "</json>"
    )
    server.faults = lambda item, k: "400" if item == "p1" else None
    server.error_message = f"invalid request from {ANTHROPIC_KEY}"
    cache = tmp_path / "c.sqlite"
    with caplog.at_level(logging.DEBUG):
        report = run_grading(_judge("anthropic", server, gate=True), _requests(2), cache=cache, **FAST)
    assert ANTHROPIC_KEY in server.records[0].auth  # the key was really sent
    g0, g1 = report.grades
    assert g0.ok and "[REDACTED]" in g0.raw_response and g1.error and "HTTP 400 (not retried)" in g1.error
    assert server.attempts_by_item["p1"] == 1 and report.stats.http_requests == 2
    dumped = json.dumps([g.model_dump() for g in report.grades]) + repr(report.stats)
    assert ANTHROPIC_KEY not in dumped
    assert ANTHROPIC_KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert ANTHROPIC_KEY not in caplog.text
    assert ANTHROPIC_KEY not in repr(_judge("anthropic", server))


def test_grade_all_works_inside_a_running_event_loop(server: JudgeServer):
    judge = _judge("anthropic", server)

    async def notebook_cell():
        return grade_all(judge, _requests(3), **FAST)  # as in Jupyter, where a loop is running

    grades = asyncio.run(notebook_cell())
    assert all(g.ok for g in grades)
    # the same judge is reusable in a later loop (its client is rebuilt per loop)
    assert all(g.ok for g in grade_all(judge, _requests(2, tag="again"), **FAST))
    # and the async API
    assert all(g.ok for g in asyncio.run(judge.grade(_requests(2, tag="async"), **FAST)))
    assert server.n_requests == 7


def test_make_judge_routing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-key-0123456789")
    cases = {
        "claude": (ClaudeJudge, f"anthropic:{DEFAULT_CLAUDE_MODEL}"),
        "claude:claude-sonnet-4-5-20250929": (ClaudeJudge, "anthropic:claude-sonnet-4-5-20250929"),
        "anthropic:claude-x": (ClaudeJudge, "anthropic:claude-x"),
        "claude-3-5-haiku-20241022": (ClaudeJudge, "anthropic:claude-3-5-haiku-20241022"),
        "openai:gpt-4o-mini": (OpenAICompatJudge, "openai:gpt-4o-mini"),
        "gpt-4.1": (OpenAICompatJudge, "openai:gpt-4.1"),
        "openrouter:google/gemini-2.5-flash": (OpenAICompatJudge, "openrouter:google/gemini-2.5-flash"),
        "meta-llama/llama-3.3-70b-instruct": (
            OpenAICompatJudge,
            "openrouter:meta-llama/llama-3.3-70b-instruct",
        ),
    }
    for name, (cls, judge_id) in cases.items():
        judge = make_judge(name)
        assert type(judge) is cls and judge.judge_id == judge_id, name
    assert make_judge("openrouter:x/y").base_url == "https://openrouter.ai/api/v1"
    assert make_judge("claude", gate=True).judge_id == f"anthropic:{DEFAULT_CLAUDE_MODEL}+{GATING_VERSION}"
    for bad in ("", "gemini-2.5-pro", "foo:bar", "claude:"):
        with pytest.raises(JudgeConfigError):
            make_judge(bad)
    with pytest.raises(JudgeConfigError, match="base_url"):
        make_judge("vllm:qwen")
    with pytest.raises(JudgeConfigError, match="max_retries"):
        make_judge("claude", max_retries=-1)
