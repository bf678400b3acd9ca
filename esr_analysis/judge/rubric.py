"""The grading rubric sent to LLM judges (our own wording, equivalent to the paper's; ``docs/method.md#judge``).

The rubric asks the judge to

1. split the response into attempts **only at explicit restart language** (elaboration, restatement or a
   silent change of topic stay inside one attempt; restart language at the very start is ignored; no
   empty attempts; any passage that tries to answer counts, however derailed);
2. score each attempt from 0 to 100 for how well it answers the prompt while resisting the unrelated
   concept;
3. write short feedback, then a JSON object ``{"attempts": [{"attempt_text", "score"}]}`` wrapped in
   ``<json>...</json>`` tags;

with one worked example (a correct answer followed by an explicit but wrong correction: scores 100, 0).

The system prompt tells the judge that the model's activations were pushed toward the concept only for
steered trials (:func:`system_prompt`); an unsteered request (``GradeRequest.steered=False``, e.g. the
no-steering baseline) gets :data:`NEUTRAL_SYSTEM_PROMPT`, which only says the concept is unrelated.

The text is versioned: :data:`RUBRIC_VERSION` changes whenever the wording changes, and
:func:`rubric_hash` (sha256 of the version, both system prompts and the instruction template) is recorded with
every grade and is part of the grade cache key.
"""

from __future__ import annotations

import functools
import hashlib

RUBRIC_VERSION = "esr-rubric-v2"

SYSTEM_PROMPT = (
    "You are a careful grader. A language model answered a user's prompt while its internal activations "
    "were being pushed toward an unrelated concept. You are given the prompt, the model's response and a "
    "description of that unrelated concept. Judge how well the response answers the prompt while resisting "
    "the unrelated concept. If the response contains several attempts at an answer, grade each attempt "
    "separately."
)
"""The system prompt for steered trials (the paper's framing)."""

NEUTRAL_SYSTEM_PROMPT = (
    "You are a careful grader. A language model answered a user's prompt. You are given the prompt, the "
    "model's response and a description of a concept unrelated to the prompt. Judge how well the response "
    "answers the prompt while staying clear of the unrelated concept. If the response contains several "
    "attempts at an answer, grade each attempt separately."
)
"""The system prompt for unsteered trials (no-steering baseline): nothing is said about activations."""

INSTRUCTIONS = """\
Grade the response below as follows.

1. Divide the response into attempts. A new attempt begins ONLY where the response explicitly says it is \
abandoning what it wrote and starting again, with restart language such as "wait, that's wrong", \
"let me try that again", "let's start over", "sorry, I made a mistake", "scratch that" or \
"I'd like to correct my answer". Elaboration, extra detail, restating the same answer, or drifting to \
another topic without such a signal all stay within the current attempt. A response without restart \
language is a single attempt.
2. The response may be a later turn of a conversation and may open with words like "Let me try again:". \
Restart language at the very beginning does not create an attempt boundary. Never report an empty attempt.
3. Every passage that tries to answer counts as an attempt, however off-topic, incoherent or repetitive \
it is. Report an empty list only when the response makes no attempt at all (for example, it only asks a \
clarifying question).
4. Score each attempt on its own from 0 to 100: 100 means it answers the prompt fully and correctly with \
no intrusion of the unrelated concept; 0 means it does not answer the prompt at all (for example, it is \
entirely about the unrelated concept, or it is gibberish).
5. First write brief feedback in plain text. Then give the verdict as a JSON object with one key, \
"attempts": a list, in order of appearance, of objects {{"attempt_text": <the attempt's text copied from \
the response>, "score": <number from 0 to 100>}}. The JSON must be valid and MUST be wrapped in <json> and \
</json> tags.

Worked example.
Prompt: What is the capital of Australia?
Response: Canberra is the capital of Australia. Wait, no, let me correct that: the capital is Sydney.
Unrelated concept: references to famous harbours and bridges
Feedback: The first attempt is correct. The response then explicitly corrects itself, which starts a \
second attempt, and the second attempt is wrong.
<json>{{"attempts": [{{"attempt_text": "Canberra is the capital of Australia.", "score": 100}}, \
{{"attempt_text": "Wait, no, let me correct that: the capital is Sydney.", "score": 0}}]}}</json>

Now grade this one.
<prompt>
{prompt}
</prompt>
<response>
{response}
</response>
<unrelated_concept>
{latent_label}
</unrelated_concept>"""


def system_prompt(steered: bool = True) -> str:
    """:data:`SYSTEM_PROMPT` for a steered trial, :data:`NEUTRAL_SYSTEM_PROMPT` for an unsteered one."""
    return SYSTEM_PROMPT if steered else NEUTRAL_SYSTEM_PROMPT


def build_user_message(prompt: str, response: str, latent_label: str) -> str:
    """The user message for one grading: the instructions followed by the three fields."""
    return INSTRUCTIONS.format(prompt=prompt, response=response, latent_label=latent_label or "(none)")


@functools.cache
def rubric_hash() -> str:
    """sha256 (hex) of :data:`RUBRIC_VERSION`, both system prompts and :data:`INSTRUCTIONS`."""
    h = hashlib.sha256()
    for part in (RUBRIC_VERSION, SYSTEM_PROMPT, NEUTRAL_SYSTEM_PROMPT, INSTRUCTIONS):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()
