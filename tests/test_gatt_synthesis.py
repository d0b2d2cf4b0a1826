"""GAtt synthesis: only the last assistant turn is learned, the instruction stays in turn 1 only,
dialogues that cannot be made to adhere are dropped and counted."""

import pytest

import gatt.synthesize as synthesize_module
from core.chat import IGNORE_INDEX, tokenize_conversation
from core.generation import SamplingConfig
from gatt.config import RankingSection, SynthesisSection
from gatt.dialogues import Dialogue
from gatt.instructions import make_instruction
from gatt.synthesize import Ranker, pick_best, repair_answer, synthesize

PREFIX = make_instruction("prefix", "Answer:")
MARKER = make_instruction("end_marker", "-- done")
DIALOGUES = [
    Dialogue("d0", ("What is the capital of Peru?", "What is 2 + 3?", "List exactly 2 fruits.")),
    Dialogue("d1", ("Translate 'cat' into French.", "What is the opposite of 'hot'?", "What is 4 + 4?"), system="Be brief."),
    Dialogue("d2", ("What is 7 + 1?", "What is the capital of Chile?", "What is 9 - 2?")),
]


def stub_generate(turn_to_fail: int | None = None, fail_id: str = "d2"):
    """A stand-in for core.generation.generate: of each K copies, the first breaks the
    instruction and the rest obey it (with growing length), except that dialogue `fail_id`
    never obeys at turn `turn_to_fail`."""

    def generate(model, tokenizer, conversations, sampling, progress=True, description=""):
        outputs = []
        for index, messages in enumerate(conversations):
            users = [m["content"] for m in messages if m["role"] == "user"]
            instruction = PREFIX if PREFIX.text in users[-1] else MARKER
            failing = turn_to_fail == len(users) and "7 + 1" in users[0] and fail_id == "d2"
            copy = index % 2
            answer = f"answer {len(users)}" + " more" * copy
            outputs.append(answer if copy == 0 or failing else instruction.apply(answer))
        return outputs

    return generate


@pytest.fixture
def stubbed(monkeypatch):
    def install(**kwargs):
        monkeypatch.setattr(synthesize_module, "generate", stub_generate(**kwargs))

    return install


def run_stubbed(position="first_user", examples="last", **settings):
    config = SynthesisSection(k=2, instruction_position=position, examples=examples, ranking=RankingSection(by="first"), **settings)
    return synthesize(None, None, DIALOGUES, [PREFIX, MARKER, PREFIX], config, Ranker(config.ranking), seed=0)


def learned_text(tokenizer, messages):
    encoded = tokenize_conversation(tokenizer, messages, learn="last")
    learned = [token for token, label in zip(encoded["input_ids"], encoded["labels"]) if label != IGNORE_INDEX]
    # every learned label is the input token itself, and the learned tokens are one contiguous run
    positions = [i for i, label in enumerate(encoded["labels"]) if label != IGNORE_INDEX]
    assert positions == list(range(positions[0], positions[-1] + 1))
    assert all(encoded["labels"][i] == encoded["input_ids"][i] for i in positions)
    return tokenizer.decode(learned)


def test_only_the_last_answer_is_learned_and_the_instruction_stays_in_turn_one(stubbed, smollm_tokenizer):
    stubbed()
    records, stats = run_stubbed()
    assert stats.n_kept == 3 and stats.n_dropped == 0 and len(records) == 3
    for record, instruction in zip(records, [PREFIX, MARKER, PREFIX]):
        messages = record["messages"]
        assert record["learn"] == "last"
        users = [m for m in messages if m["role"] == "user"]
        assistants = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(users) == len(assistants) == 3
        assert users[0]["content"].endswith(record["instruction_text"])
        assert all(record["instruction_text"] not in u["content"] and instruction.text not in u["content"] for u in users[1:])
        assert all(instruction.text not in m["content"] for m in messages if m["role"] == "system")
        # every kept answer obeys the instruction (earlier turns stay in context, unlearned)
        assert all(instruction.check(answer) for answer in assistants)
        # token by token: the learned tokens are exactly the last answer and its end-of-turn token
        assert learned_text(smollm_tokenizer, messages) == assistants[-1] + smollm_tokenizer.eos_token


def test_system_position_moves_the_instruction_out_of_every_user_turn(stubbed, smollm_tokenizer):
    stubbed()
    records, _ = run_stubbed(position="system")
    for record in records:
        messages = record["messages"]
        assert messages[0]["role"] == "system" and messages[0]["content"].startswith(record["instruction_text"])
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 3
        assert all(record["instruction_text"] not in m["content"] for m in messages[1:] if m["role"] == "user")
        assert learned_text(smollm_tokenizer, messages) == messages[-1]["content"] + smollm_tokenizer.eos_token
    assert records[1]["messages"][0]["content"].endswith("Be brief.")  # a dialogue's own system message is kept


def test_dialogues_without_an_adhering_sample_are_dropped_and_counted(stubbed):
    stubbed(turn_to_fail=2)
    records, stats = run_stubbed()
    assert stats.n_dropped == 1 and stats.n_kept == 2
    assert stats.dropped_at_turn == {2: 1} and stats.dropped_by_kind == {"prefix": 1}
    assert [r["id"] for r in records] == ["d0", "d1"]
    assert stats.sample_adherence_by_turn[1] == pytest.approx(0.5)


def test_repair_rewrites_the_best_sample_of_a_failed_turn_and_counts_it(stubbed):
    stubbed(turn_to_fail=2)
    records, stats = run_stubbed(repair="apply")
    assert stats.n_dropped == 0 and stats.n_kept == 3
    assert stats.repaired_by_turn == {2: 1}
    failed = next(r for r in records if r["id"] == "d2")
    answers = [m["content"] for m in failed["messages"] if m["role"] == "assistant"]
    # ranking "first" scores both samples 0: the first ("answer 2") is rewritten
    assert answers[1] == "Answer: answer 2"
    assert all(PREFIX.check(answer) for answer in answers)


def test_adhering_samples_below_the_score_floor_are_not_kept():
    # adheres, scores: the best adhering sample (9.0) is refused under a floor of 10
    assert pick_best([True, True, False], [1.0, 9.0, 20.0], min_score=5.0) == 1
    assert pick_best([True, True, False], [1.0, 9.0, 20.0], min_score=10.0) is None


def test_repair_answer_applies_the_instruction_to_the_best_scoring_sample():
    assert repair_answer(MARKER, ["Paris.", "Lima.", "Rome."], [0.2, 1.0, 1.0]) == "Lima. -- done"


def test_repair_does_not_edit_what_already_obeys():
    """A sample that ends with the marker but scored too low is kept as it is, not
    given the marker twice ("Lima. -- done -- done" was a real quickstart target)."""
    assert repair_answer(MARKER, ["Lima. -- done"], [0.1]) == "Lima. -- done"


def test_every_turn_examples_each_learn_only_their_own_last_turn(stubbed, smollm_tokenizer):
    stubbed()
    records, stats = run_stubbed(examples="every_turn")
    assert stats.n_examples == len(records) == 3 * 3  # prefixes ending at turns 1, 2 and 3
    for record in records:
        answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        assert learned_text(smollm_tokenizer, record["messages"]) == answers[-1] + smollm_tokenizer.eos_token


def test_pick_best_takes_the_best_adhering_sample():
    assert pick_best([False, True, True], [9.0, 1.0, 2.0]) == 2
    assert pick_best([True, True], [1.0, 1.0]) == 0
    assert pick_best([False, False], [1.0, 2.0]) is None


def test_synthesis_with_the_tiny_model_end_to_end(tiny_model_and_tokenizer):
    """Real sampling with the random tiny model; `max_words` is satisfiable by chance."""
    model, tokenizer = tiny_model_and_tokenizer
    instruction = make_instruction("max_words", 10)
    config = SynthesisSection(k=2, sampling=SamplingConfig(max_new_tokens=6, temperature=1.0, batch_size=8), ranking=RankingSection(by="shortest"))
    records, stats = synthesize(model, tokenizer, DIALOGUES, [instruction] * 3, config, Ranker(config.ranking), seed=0, progress=False)
    assert stats.n_kept + stats.n_dropped == 3 and stats.n_kept == len(records) >= 1
    for record in records:
        messages = record["messages"]
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        assert all(instruction.check(answer) for answer in answers)
        assert learned_text(tokenizer, messages) == answers[-1] + tokenizer.eos_token
