"""Episodes for attribution: a minimal loader, the tokens up to the correction, the restart metric, counterfactuals.

An **episode** here (:class:`RecoveryPoint`, a recovery annotated at its correction; the trial-level record
is :class:`esr_analysis.mechanisms.episodes.Episode`) is one steered response that recovers: ``prompt``, ``response``,
``correction_char`` (the character offset in ``response`` where the restart language begins, e.g. "Wait"),
the ``interventions`` the response was generated with (plain dicts with a ``kind``, as stored in trials:
:mod:`esr_analysis.steering.interventions`), and optionally ``offtopic_char`` (where the off-topic span begins),
``ontopic_char`` (where the recovered, on-topic answer begins, after the restart phrase) or ``ontopic_text``,
``detectors`` (SAE latents of off-topic detectors) and ``id``. :func:`load_episodes` reads a JSON list or a
JSONL file of such objects (other keys are kept in ``extra``); it does not depend on a run store.

Positions (:class:`Prepared`): the episode is teacher-forced as ``prompt tokens + response tokens`` **up to but
not including the correction token** ``c`` (the first response token whose characters reach
``correction_char``). The metric position is the last one, ``c - 1``, whose logits predict token ``c``: the
**restart token** ``r`` the model emitted. Nothing after it can affect the metric (causal attention).

**Restart logit difference** at ``c - 1``: ``logit[r] - logit[a]`` where ``a`` is a given token, or by default the
top token of the clean run that does not begin restart language (:data:`RESTART_WORDS`, with and without a
leading space; their first tokens are excluded), chosen on the clean run and then held fixed.

**Counterfactuals** (same token count, so every position lines up): ``steering_off`` (same tokens, no
interventions); ``ontopic_span`` (the tokens from ``offtopic_char`` up to ``c`` replaced by as many tokens of
on-topic text: ``ontopic_text``, else the response from ``ontopic_char``); ``detectors_ablated`` (same tokens,
the episode's interventions plus :class:`~esr_analysis.steering.interventions.AblateLatents` of the detectors
at the SAE's layer, scope ``all``). Each is described by a plain-data record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esr_analysis.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

RESTART_WORDS = ("Wait", "wait", "Actually", "actually", "Oops", "Whoops", "Hold", "Hang", "Sorry", "Hmm",
                 "Correction", "Scratch", "Apologies", "Oh", "No")
"""Words that begin restart language (the interjections of :mod:`esr_analysis.judge.restart`): their first tokens
are never the comparison token ``a`` of the restart logit difference. Ordinary sentence starters that can also
begin a restart ("I", "Let", "My") are kept as candidates, since a non-recovering continuation uses them too.
Not a second definition of restart language: :mod:`esr_analysis.judge.restart` defines it, as regular
expressions over whole phrases at a sentence start (to split attempts); this is a token-level exclusion list of
the opening words of those phrases and their lead-ins, which cannot be derived from the patterns (their
lead-ins also allow ordinary starters: "Okay", "Well", "But"). Every word here occurs in those patterns
(tested); a new opening word there belongs here too."""

COUNTERFACTUALS = ("steering_off", "ontopic_span", "detectors_ablated")
_FIELDS = ("prompt", "response", "correction_char", "interventions", "offtopic_char", "ontopic_char",
           "ontopic_text", "detectors", "id")


@dataclass
class RecoveryPoint:
    """One recovering response (see the module docstring)."""

    prompt: str
    response: str
    correction_char: int
    interventions: list[dict[str, Any]] = field(default_factory=list)
    offtopic_char: int | None = None
    ontopic_char: int | None = None
    ontopic_text: str | None = None
    detectors: list[int] | None = None
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.correction_char < len(self.response):
            raise ConfigError(f"episode {self.id!r}: correction_char {self.correction_char} is not inside the "
                              f"response (length {len(self.response)}, and something must precede it)")
        if self.offtopic_char is not None and not 0 <= self.offtopic_char < self.correction_char:
            raise ConfigError(f"episode {self.id!r}: offtopic_char must lie before correction_char")

    @classmethod
    def from_dict(cls, d: dict[str, Any], index: int = 0) -> RecoveryPoint:
        """An episode from a plain dict (unknown keys go to ``extra``; ``id`` defaults to the index)."""
        missing = [k for k in ("prompt", "response", "correction_char") if k not in d]
        if missing:
            raise ConfigError(f"episode {index} lacks {', '.join(missing)}")
        known = {k: d[k] for k in _FIELDS if k in d and d[k] is not None}
        known["id"] = str(known.get("id", index))
        return cls(**known, extra={k: v for k, v in d.items() if k not in _FIELDS})

    def parsed_interventions(self) -> list[Any]:
        """The interventions as :mod:`esr_analysis.steering.interventions` objects.

        Each entry is either an intervention's own dump (``AddLatent(...).model_dump()``, with ``strength``) or
        a stored resolved record (with ``strength_given``/``strength_sae``, as runs and episode files keep
        them), which replays at the strength generation applied, in SAE units."""
        from pydantic import TypeAdapter

        from esr_analysis.mechanisms.episodes import interventions_from_records
        from esr_analysis.steering.interventions import Intervention

        adapter = TypeAdapter(Intervention)
        return [interventions_from_records([iv])[0] if ("strength_given" in iv or "strength_sae" in iv)
                else adapter.validate_python(iv) for iv in self.interventions]


def load_episodes(path: str | Path) -> list[RecoveryPoint]:
    """Episodes from a JSON list (or ``{"episodes": [...]}``) or a JSONL file (one object per line)."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{") and "\n{" not in stripped.strip():
        data = json.loads(text)
        # {"episodes": [...]}, or a one-line JSONL file holding one episode
        items = data.get("episodes", [data]) if isinstance(data, dict) else data
    else:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [RecoveryPoint.from_dict(d, i) for i, d in enumerate(items)]


@dataclass
class Prepared:
    """An episode as tokens: ``ids`` (prompt + response tokens before the correction token), ``start`` (index of
    the first response token), ``target`` (the restart token ``r``), ``response_ids`` (all response tokens) and
    ``offsets`` (each response token's ``(start, end)`` characters)."""

    episode: RecoveryPoint
    ids: list[int]
    start: int
    target: int
    response_ids: list[int]
    offsets: list[tuple[int, int]]

    @property
    def position(self) -> int:
        """The metric position ``c - 1`` (the last of :attr:`ids`)."""
        return len(self.ids) - 1

    def token_at_char(self, char: int) -> int:
        """Index into :attr:`ids` of the first response token that ends after character ``char``."""
        for j, (_, end) in enumerate(self.offsets):
            if end > char:
                return self.start + j
        raise ConfigError(f"character {char} is past the response of episode {self.episode.id!r}")


def _response_tokens(tok: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def prepare(lm: Any, episode: RecoveryPoint, *, chat: bool = True) -> Prepared:
    """Tokenise ``episode`` (chat template as in generation, :func:`esr_analysis.models.chat.format_chat`) and cut
    it before the correction token."""
    from esr_analysis.models.chat import format_chat

    tok = lm.tokenizer
    _, p_ids = format_chat(tok, episode.prompt, chat=chat)
    r_ids, offsets = _response_tokens(tok, episode.response)
    prep = Prepared(episode, list(p_ids), len(p_ids), -1, r_ids, offsets)
    c = prep.token_at_char(episode.correction_char)
    if c == prep.start:
        raise ConfigError(f"episode {episode.id!r}: the correction is the first response token")
    prep.ids = list(p_ids) + r_ids[: c - prep.start]
    prep.target = r_ids[c - prep.start]
    return prep


def restart_token_ids(tok: Any, words: Sequence[str] = RESTART_WORDS) -> list[int]:
    """First token ids of ``words`` with and without a leading space (the excluded comparison tokens)."""
    out: set[int] = set()
    for w in words:
        for text in (w, " " + w):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if ids:
                out.add(int(ids[0]))
    return sorted(out)


def restart_metric(prep: Prepared, tok: Any, other: int | None = None) -> dict[str, Any]:
    """The in-trace metric dict of the restart logit difference (``other`` ``None``: top non-restart token)."""
    import torch

    exclude = sorted(set(restart_token_ids(tok)) | {prep.target})
    return {"kind": "logit_diff", "position": prep.position, "target": int(prep.target),
            "other": -1 if other is None else int(other), "exclude": torch.tensor(exclude, dtype=torch.long)}


def detector_metric(prep: Prepared, sae: Any, layer: int, detectors: Sequence[int], window: int = 8) -> dict:
    """The in-trace metric dict of detector pre-activations: the sum over the ``window`` response positions before
    the correction (those up to ``c - 1``) of every detector's pre-activation at block ``layer``."""
    import torch

    from esr_analysis.sae.sliced import SlicedSAE

    if not detectors:
        raise ConfigError("the detector metric needs at least one detector latent")
    lo = max(prep.start, len(prep.ids) - window)
    params = SlicedSAE.from_sae(sae, list(detectors)).params(dtype=torch.float32).as_kernel()
    return {"kind": "latent_pre", "layer": int(layer), "positions": torch.arange(lo, len(prep.ids)),
            "slice": params}


def counterfactual(prep: Prepared, kind: str, *, sae_layer: int | None = None, tok: Any = None
                   ) -> tuple[list[int], list[Any], dict[str, Any]]:
    """``(ids, interventions, record)`` of counterfactual ``kind`` (:data:`COUNTERFACTUALS`); ``record`` says what
    was changed, as plain data. Raises :class:`ConfigError` when the episode lacks what ``kind`` needs."""
    from esr_analysis.steering.interventions import AblateLatents

    ep = prep.episode
    ivs = ep.parsed_interventions()
    if kind == "steering_off":
        return list(prep.ids), [], {"kind": kind, "removed": ep.interventions}
    if kind == "detectors_ablated":
        if not ep.detectors or sae_layer is None:
            raise ConfigError(f"episode {ep.id!r}: detectors_ablated needs detector latents and an SAE layer")
        abl = AblateLatents(latents=tuple(int(i) for i in ep.detectors), layer=int(sae_layer), scope="all")
        return list(prep.ids), ivs + [abl], {"kind": kind, "added": abl.model_dump(mode="json")}
    if kind == "ontopic_span":
        if ep.offtopic_char is None:
            raise ConfigError(f"episode {ep.id!r}: ontopic_span needs offtopic_char")
        s = prep.token_at_char(ep.offtopic_char)
        n = len(prep.ids) - s
        if ep.ontopic_text is not None:
            source, _ = _response_tokens(tok, ep.ontopic_text)
        elif ep.ontopic_char is not None:
            j = prep.token_at_char(ep.ontopic_char) - prep.start
            source = prep.response_ids[j:]
        else:
            raise ConfigError(f"episode {ep.id!r}: ontopic_span needs ontopic_char or ontopic_text")
        if len(source) < n:
            raise ConfigError(f"episode {ep.id!r}: on-topic text has {len(source)} tokens, the span needs {n}")
        ids = list(prep.ids[:s]) + list(source[:n])
        text = tok.decode(source[:n]) if tok is not None else None
        return ids, ivs, {"kind": kind, "span_tokens": [s, len(prep.ids)], "replacement": text}
    raise ConfigError(f"unknown counterfactual {kind!r}; choose one of {', '.join(COUNTERFACTUALS)}")


def model_inputs(lm: Any, ids: Sequence[int], start: int, interventions: list[Any], sae: Any, rows: int = 1,
                 remote: bool | str = False) -> tuple[torch.Tensor, torch.Tensor, list[Any], dict[str, torch.Tensor]]:
    """``(input_ids, attention_mask, plans, masks)`` for ``rows`` copies of one sequence with ``interventions``;
    scopes map onto it as in replay (:func:`esr_analysis.steering.replay.scope_masks`)."""
    import torch

    from esr_analysis.steering.replay import scope_masks
    from esr_analysis.steering.residuals import median_norm_function
    from esr_analysis.steering.resolve import build_plans, resolve_rows, validate

    validate(lm, [interventions], sae, None)
    _, addends, ablations = resolve_rows(lm, [interventions], sae, median_norm_function(remote))
    plans = build_plans(lm, sae, addends, ablations, None, [0] * rows)
    input_ids = torch.tensor([list(ids)] * rows, dtype=torch.long)
    mask = torch.ones_like(input_ids)
    masks = scope_masks(mask, torch.full((rows, 1), start))
    return input_ids, mask, plans, masks


def recovery_points(recoveries: Sequence[Any], boundaries: Sequence[Any],
                    detectors: Sequence[int] | None = None) -> tuple[list[RecoveryPoint], dict[str, int]]:
    """Attribution inputs from trial-level recoveries (:class:`esr_analysis.mechanisms.episodes.Episode`) and
    their boundaries (:class:`esr_analysis.mechanisms.boundaries.Boundaries`, same order): ``correction_char``
    = the correction start, ``offtopic_char``/``ontopic_char`` = the off-topic and on-topic starts. A recovery
    whose correction is unclear (``-1``) or at the very start is left out; the second value counts the
    exclusions by reason. The trials' stored (resolved) intervention records become replayable specs with the
    applied strength in SAE units (:func:`esr_analysis.mechanisms.episodes.interventions_from_records`)."""
    if len(recoveries) != len(boundaries):
        raise ValueError(f"{len(recoveries)} recoveries but {len(boundaries)} boundaries")
    out: list[RecoveryPoint] = []
    dropped: dict[str, int] = {}
    for ep, b in zip(recoveries, boundaries, strict=True):
        if b.correction <= 0 or b.correction >= len(ep.response):
            dropped["correction_unclear"] = dropped.get("correction_unclear", 0) + 1
            continue
        off = b.off_topic if 0 <= b.off_topic < b.correction else None
        on = b.on_topic if b.on_topic > b.correction else None
        out.append(RecoveryPoint(prompt=ep.prompt, response=ep.response, correction_char=b.correction,
                                 interventions=[iv.model_dump(mode="json") for iv in ep.steering()],
                                 offtopic_char=off, ontopic_char=on,
                                 detectors=list(detectors) if detectors else None, id=ep.episode_id,
                                 extra={"latent": ep.latent, "scores": list(ep.scores), "run": ep.run,
                                        "seed": ep.seed, "boundary_source": b.source}))
    return out, dropped


def write_recovery_points(path: str | Path, points: Sequence[RecoveryPoint]) -> Path:
    """``points`` as JSONL that :func:`load_episodes` reads back (atomic write)."""
    from dataclasses import asdict

    from esr_analysis.files import atomic_write_text

    rows = []
    for p in points:
        d = asdict(p)
        extra = d.pop("extra")
        rows.append(json.dumps({**d, **extra}, ensure_ascii=False))
    return atomic_write_text(Path(path), "".join(r + "\n" for r in rows))
