"""BPETokenizer: training, round trips, special tokens, engines, saving and loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.tokenizer import BPETokenizer, load_tokenizer, tokenizer_from_dict
from gptlab.tokenizer.bpe import build_bpe_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EOT = "<|endoftext|>"

# A small corpus with multi-byte characters, so merges inside UTF-8 sequences are learned.
CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    "We're told it's 1234 or 56789 miles. Naïve café — déjà vu! 中文分词很有趣。 日本語の文章。\n"
    "Emoji: 😀😀 👍🏽 👨\u200d👩\u200d👧 and   runs   of    spaces\t\ttabs\n\n\n"
) * 40


def _text() -> str:
    path = DATA / "tinyshakespeare.txt"
    extra = path.read_text(encoding="utf-8")[:100_000] if path.is_file() else ""
    return CORPUS + extra


@pytest.fixture(scope="module", params=["gpt4", "gpt2", None])
def trained(request) -> BPETokenizer:
    return BPETokenizer.train(_text(), vocab_size=600, pattern=request.param, progress=False)


def test_shape(trained):
    assert trained.vocab_size == 600
    assert trained.eot_id == 599
    assert len(trained.merges) == 600 - 256 - 1
    assert trained.vocab[:256] == [bytes([b]) for b in range(256)]
    # merges are learned in order: each one only uses ids that exist before it
    assert all(a < 256 + i and b < 256 + i for i, (a, b) in enumerate(trained.merges))


def test_training_is_deterministic():
    a = BPETokenizer.train(CORPUS, vocab_size=400, progress=False)
    b = BPETokenizer.train(CORPUS, vocab_size=400, progress=False)
    assert a.merges == b.merges
    assert a.fingerprint() == b.fingerprint()


def test_compresses(trained):
    text = CORPUS
    assert len(text.encode("utf-8")) / len(trained.encode(text)) > 2.0


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=120))
def test_round_trip_any_text(trained, text):
    """decode(encode(s)) == s for every str without surrogates; both engines agree."""
    ids = trained.encode_python(text)
    assert ids == trained.encode(text, engine="tiktoken")
    assert trained.decode(ids) == text
    assert all(0 <= i < trained.vocab_size for i in ids)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.lists(
        st.sampled_from(["a", " ", "\n", "é", "😀", EOT, "<|", "|>", "endoftext"]), max_size=40
    ).map("".join)
)
def test_round_trip_with_special_tokens(trained, text):
    ids = trained.encode_python(text)
    assert ids == trained.encode(text)
    assert trained.decode(ids) == text
    assert ids.count(trained.eot_id) == text.count(EOT)


def test_special_tokens_are_never_merged():
    text = (CORPUS[:3000] + EOT) * 5 + EOT * 50
    tok = BPETokenizer.train(text, vocab_size=300, pattern=None, progress=False)
    assert not any(b"endoftext" in t for t in tok.vocab)
    assert tok.encode("hi" + EOT) == [*tok.encode("hi"), tok.eot_id]
    plain = tok.encode(EOT, allowed_special="none")
    assert tok.eot_id not in plain
    assert tok.decode(plain) == EOT
    assert tok.encode(EOT, allowed_special={EOT}) == [tok.eot_id]


def test_several_special_tokens():
    tok = BPETokenizer.train(
        CORPUS, vocab_size=300, special_tokens=[EOT, "<|pad|>"], progress=False
    )
    assert tok.special_tokens == {EOT: 298, "<|pad|>": 299}
    text = f"a<|pad|>b{EOT}"
    assert tok.encode_python(text) == tok.encode(text, engine="tiktoken")
    assert tok.encode(text, allowed_special={"<|pad|>"})[1] == 299
    assert tok.decode(tok.encode(text)) == text


def test_no_special_tokens():
    tok = BPETokenizer.train(CORPUS, vocab_size=300, special_tokens=[], progress=False)
    assert tok.eot_id is None
    assert tok.vocab_size == 300


def test_decode_joins_bytes_before_utf8(trained):
    ids = trained.encode("é😀")
    byte_ids = trained.encode_python("😀")
    assert trained.decode(ids) == "é😀"
    # half of a 4-byte character is not text: replaced only at the end
    first = [i for i in range(256) if trained.vocab[i] == "😀".encode()[:1]]
    assert trained.decode(first) == "\ufffd"
    assert trained.decode_bytes(byte_ids) == "😀".encode()


def test_decode_rejects_unknown_ids(trained):
    from gptlab.tokenizer import TokenizerError

    for bad in ([trained.vocab_size], [-1], ["a"]):
        with pytest.raises(TokenizerError, match="cannot decode id"):
            trained.decode(bad)


def test_encode_batch(trained):
    texts = [CORPUS[i : i + 500] for i in range(0, 5000, 500)] + ["", EOT]
    expected = [trained.encode_python(t) for t in texts]
    assert trained.encode_batch(texts) == expected
    assert trained.encode_batch(texts, engine="python") == expected


def test_to_tiktoken(trained):
    enc = trained.to_tiktoken()
    assert enc.n_vocab == trained.vocab_size
    assert enc.encode(CORPUS, allowed_special="all") == trained.encode_python(CORPUS)
    assert enc.decode(trained.encode(CORPUS)) == CORPUS


# ------------------------------------------------------------------ saving and loading


def test_save_and_load(trained, tmp_path):
    path = trained.save(tmp_path / "tok.json")
    loaded = BPETokenizer.load(path)
    assert loaded.merges == trained.merges
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.pattern == trained.pattern
    assert loaded.fingerprint() == trained.fingerprint()
    assert loaded.encode(CORPUS) == trained.encode(CORPUS)
    # the framework's generic loaders read it too (checkpoints carry to_dict())
    assert load_tokenizer(path).merges == trained.merges
    assert tokenizer_from_dict(json.loads(json.dumps(trained.to_dict()))).merges == trained.merges


def test_save_format_is_readable(trained, tmp_path):
    path = trained.save(tmp_path / "tok.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["kind"] == "bpe" and data["format_version"] == 1
    assert data["special_tokens"] == {EOT: 599}
    assert len(data["merges"]) == 343
    # the merges are their own check (loading rebuilds the vocabulary): no count or checksum
    assert "n_merges" not in data and "merges_sha256" not in data
    # one field for the split pattern: the regex (its name is recognised from it on loading)
    assert "pattern" not in data and data["pattern_regex"] == trained.pattern_regex
    lines = path.read_text(encoding="utf-8").splitlines()
    # one merge per line, rendered like GPT-2's merges.txt ("Ġ" is a space)
    assert f'  "{data["merges"][0]}",' in lines or f' "{data["merges"][0]}",' in lines
    assert all(len(m.split(" ")) == 2 for m in data["merges"])


def _old_file(tok: BPETokenizer, path: Path, settings_checksum: bool = True) -> Path:
    """Write ``tok`` by hand exactly as gptlab wrote it before 2026-12 (commit 15caca0)."""
    import hashlib

    new = tok.to_dict()
    lines = new["merges"]
    data = {
        "kind": "bpe",
        "format_version": 1,
        "pattern": tok.pattern,
        "pattern_regex": tok.pattern_regex,
        "special_tokens": dict(tok.special_tokens),
        "byte_order": new["byte_order"],
        "n_merges": len(lines),
        "merges_sha256": hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest(),
        "merges": lines,
    }
    if settings_checksum:
        settings = {k: data[k] for k in ("pattern_regex", "special_tokens", "byte_order")}
        blob = json.dumps(settings, sort_keys=True, ensure_ascii=False).encode("utf-8")
        data["settings_sha256"] = hashlib.sha256(blob).hexdigest()
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


@pytest.mark.parametrize("settings_checksum", [True, False])
def test_a_file_saved_by_the_old_code_loads(trained, tmp_path, settings_checksum):
    path = _old_file(trained, tmp_path / "old.json", settings_checksum)
    for loaded in (BPETokenizer.load(path), load_tokenizer(path)):
        assert loaded.merges == trained.merges and loaded.pattern == trained.pattern
        assert loaded.special_tokens == trained.special_tokens
        assert loaded.encode(CORPUS) == trained.encode(CORPUS)


def test_one_parameter_for_the_split_pattern(trained):
    """A name and its regex build the same tokenizer; the name is recognised from the regex."""
    by_regex = BPETokenizer(trained.merges, pattern=trained.pattern_regex)
    by_name = BPETokenizer(trained.merges, pattern=trained.pattern)
    assert by_regex.pattern == by_name.pattern == trained.pattern
    assert by_regex.encode(CORPUS) == by_name.encode(CORPUS)


def test_saved_ranks_load_into_tiktoken(trained, tmp_path):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    path = trained.save(tmp_path / "tok.json")
    assert not (tmp_path / "tok.json.tiktoken").exists()  # saving writes the JSON alone
    exported = trained.export_tiktoken(tmp_path / "tok.tiktoken")
    meta = json.loads(path.read_text(encoding="utf-8"))
    ranks = load_tiktoken_bpe(str(exported))
    enc = tiktoken.Encoding(
        "mine",
        pat_str=meta["pattern_regex"],
        mergeable_ranks=ranks,
        special_tokens=meta["special_tokens"],
    )
    assert enc.encode(CORPUS, allowed_special="all") == trained.encode(CORPUS)
    # and back: our loader reads the ranks file, recovering the same merges
    again = BPETokenizer.from_tiktoken_file(
        exported,
        special_tokens=trained.special_tokens,
        pattern=trained.pattern,
    )
    assert again.merges == trained.merges


def test_gpt2_ranks_save_and_load(tmp_path):
    ranks = DATA / "r50k_base.tiktoken"
    if not ranks.is_file():
        pytest.skip(f"{ranks} is absent (the shared test data sits beside the repository)")
    gpt2 = BPETokenizer.from_tiktoken_file(ranks)
    path = gpt2.save(tmp_path / "gpt2.json")
    assert json.loads(path.read_text(encoding="utf-8"))["byte_order"] == "gpt2"
    exported = gpt2.export_tiktoken(tmp_path / "gpt2.tiktoken")
    assert exported.read_bytes() == ranks.read_bytes()
    loaded = BPETokenizer.load(path)
    assert loaded.vocab == gpt2.vocab
    assert loaded.encode("Hello world" + EOT) == [15496, 995, 50256]


def test_save_overwrites_atomically(trained, tmp_path):
    path = tmp_path / "tok.json"
    path.write_text("old")
    trained.save(path)
    assert BPETokenizer.load(path).merges == trained.merges
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]  # and no side file


# ------------------------------------------------------------------ config entry point


def test_build_from_config(tmp_path):
    hydra = pytest.importorskip("hydra")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(
        Path(__file__).resolve().parents[1] / "gptlab" / "conf" / "tokenizer" / "bpe.yaml"
    )
    cfg.vocab_size = 300
    cfg.progress = False
    factory = hydra.utils.instantiate(cfg)
    tok = factory(text=CORPUS)
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300 and tok.pattern == "gpt4"
    tok.save(tmp_path / "t.json")
    cfg.path = str(tmp_path / "t.json")
    again = hydra.utils.instantiate(cfg)(text="ignored when a path is given")
    assert again.merges == tok.merges


def test_build_warns_when_loaded_size_differs(tmp_path):
    tok = BPETokenizer.train(CORPUS, vocab_size=300, progress=False)
    tok.save(tmp_path / "t.json")
    with pytest.warns(UserWarning, match="has 300 ids"):
        build_bpe_tokenizer("", vocab_size=4096, path=tmp_path / "t.json")


def test_progress_bar_does_not_break_training(capsys):
    tok = BPETokenizer.train(CORPUS, vocab_size=300, progress=True)
    assert tok.vocab_size == 300
    assert "BPE merges" in capsys.readouterr().err


def test_training_text_with_surrogates():
    """Training fixes surrogates the way encoding does, instead of failing on UTF-8."""
    text = CORPUS + "lone \ud800 and paired \ud83d\ude00 " * 20
    tok = BPETokenizer.train(text, vocab_size=300, progress=False)
    fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert tok.decode(tok.encode(text)) == fixed
    assert tok.encode_python(text) == tok.encode(text)


def test_falls_back_to_python_when_tiktoken_cannot_run_the_pattern():
    """``\\X`` (grapheme cluster) exists in Python's regex but not in tiktoken's Rust engine."""
    from gptlab.tokenizer import TokenizerError

    tok = BPETokenizer.train(CORPUS, vocab_size=300, pattern=r" ?\w+|\X", progress=False)
    text = "hello wörld 👍🏽"
    with pytest.warns(RuntimeWarning, match="pure-Python engine"):
        ids = tok.encode(text)
    assert ids == tok.encode_python(text)
    assert tok.encode_batch([text, text]) == [ids, ids]
    assert tok.decode(ids) == text
    with pytest.raises(TokenizerError, match="engine='python'"):
        tok.encode(text, engine="tiktoken")
