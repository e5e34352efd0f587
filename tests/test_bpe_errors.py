"""Bad input gets one clear TokenizerError sentence, and nothing half-built or half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptlab.tokenizer import BPETokenizer, TokenizerError, load_tokenizer

EOT = "<|endoftext|>"
# Any few kB of varied text: the source of the standard library's json package.
CORPUS = Path(json.__file__).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=300, progress=False)


@pytest.fixture
def saved(tok, tmp_path) -> Path:
    return tok.save(tmp_path / "tok.json")


# ------------------------------------------------------------------ training


@pytest.mark.parametrize(
    ("vocab_size", "specials"), [(255, []), (256, [EOT]), (257, [EOT, "<|pad|>"]), (0, [])]
)
def test_vocab_too_small(vocab_size, specials):
    with pytest.raises(TokenizerError, match=f"use vocab_size >= {256 + len(specials)}"):
        BPETokenizer.train(CORPUS, vocab_size=vocab_size, special_tokens=specials, progress=False)


def test_vocab_too_large_for_the_trainer():
    with pytest.raises(TokenizerError, match="larger than this trainer supports"):
        BPETokenizer.train(CORPUS, vocab_size=2_000_000, progress=False)


def test_smallest_vocab_is_fine():
    tok = BPETokenizer.train(CORPUS, vocab_size=257, progress=False)
    assert tok.merges == [] and tok.eot_id == 256
    assert tok.decode(tok.encode(CORPUS)) == CORPUS


def test_vocab_larger_than_corpus_stops_early(tmp_path):
    with pytest.warns(UserWarning, match=r"only supports \d+ merges, not the 99743"):
        tok = BPETokenizer.train("abcabc abd", vocab_size=100_000, progress=False)
    assert tok.vocab_size == 256 + len(tok.merges) + 1 < 300
    assert tok.eot_id == tok.vocab_size - 1
    loaded = BPETokenizer.load(tok.save(tmp_path / "small.json"))  # still a valid tokenizer
    assert loaded.encode("abcabc abd" + EOT) == tok.encode("abcabc abd" + EOT)
    assert loaded.decode(loaded.encode("anything else 😀")) == "anything else 😀"


@pytest.mark.parametrize("text", ["", None])
def test_empty_corpus(text):
    with pytest.raises(TokenizerError, match="training text is empty"):
        BPETokenizer.train(text, vocab_size=300, progress=False)


def test_corpus_of_only_special_tokens_stops_early():
    with pytest.warns(UserWarning, match="only supports 0 merges"):
        tok = BPETokenizer.train(EOT * 10, vocab_size=300, progress=False)
    assert tok.vocab_size == 257


def test_unknown_pattern():
    with pytest.raises(TokenizerError, match="unknown split pattern 'gtp4'"):
        BPETokenizer.train(CORPUS, vocab_size=300, pattern="gtp4", progress=False)
    with pytest.raises(TokenizerError, match="not a valid regex"):
        BPETokenizer.train(CORPUS, vocab_size=300, pattern=r"(\w+", progress=False)


def test_custom_pattern_works(tmp_path):
    tok = BPETokenizer.train(CORPUS, vocab_size=300, pattern=r"\w+|\s+|[^\w\s]+", progress=False)
    assert tok.pattern == "custom"
    loaded = BPETokenizer.load(tok.save(tmp_path / "c.json"))
    assert loaded.pattern == "custom"
    assert loaded.encode(CORPUS) == tok.encode(CORPUS) == tok.encode_python(CORPUS)
    # older files also stored the name ("custom") beside the regex: the regex decides
    _rewrite(tmp_path / "c.json", lambda d: d.__setitem__("pattern", "custom"))
    assert BPETokenizer.load(tmp_path / "c.json").pattern_regex == tok.pattern_regex


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"hello world\n" * 3 + "café".encode("latin-1") + b" more")
    with pytest.raises(
        TokenizerError, match=r"latin1\.txt is not valid UTF-8: byte offset 39 \(0xe9\)"
    ) as e:
        BPETokenizer.train_from_file(path, vocab_size=260, progress=False)
    assert "errors='replace'" in str(e.value)
    tok = BPETokenizer.train_from_file(path, errors="replace", vocab_size=260, progress=False)
    assert "\ufffd" in tok.decode(tok.encode("caf\ufffd"))


def test_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        BPETokenizer.train_from_file(tmp_path / "nope.txt", vocab_size=300)
    with pytest.raises(TokenizerError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nope.json")


# ------------------------------------------------------------------ special tokens


@pytest.mark.parametrize(
    ("specials", "message"),
    [
        ([EOT, EOT], "listed twice"),
        (["<|a|>", "<|a|>x"], "occurs inside special token"),
        (["a"], "also an ordinary token"),
        ([""], "non-empty string"),
        (EOT, "not the string"),
    ],
)
def test_colliding_special_tokens(specials, message):
    with pytest.raises(TokenizerError, match=message):
        BPETokenizer.train(CORPUS, vocab_size=300, special_tokens=specials, progress=False)


@pytest.mark.parametrize(
    ("specials", "message"),
    [
        ({EOT: 5}, "an ordinary token already uses"),
        ({EOT: 300, "<|pad|>": 300}, "share ids"),
        ({EOT: -1}, "non-negative"),
    ],
)
def test_colliding_special_ids(tok, specials, message):
    with pytest.raises(TokenizerError, match=message):
        BPETokenizer(tok.merges, special_tokens=specials)


def test_unknown_allowed_special(tok):
    with pytest.raises(TokenizerError, match="not special tokens"):
        tok.encode("x", allowed_special={"<|nope|>"})


# ------------------------------------------------------------------ damaged files


def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_json(saved, keep):
    raw = saved.read_bytes()
    saved.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(TokenizerError, match=r"tok\.json is not valid JSON .*truncated"):
        BPETokenizer.load(saved)
    with pytest.raises(TokenizerError):
        load_tokenizer(saved)


def _old_format(path: Path) -> None:
    """Give a saved file the merges count and checksum that files written before 2026-12 carry."""
    import hashlib

    def add(d):
        d["n_merges"] = len(d["merges"])
        d["merges_sha256"] = hashlib.sha256("\n".join(d["merges"]).encode("utf-8")).hexdigest()

    _rewrite(path, add)


def test_a_new_file_refuses_merges_that_no_longer_build_a_vocabulary(saved):
    """No count or checksum is needed: loading rebuilds the vocabulary merge by merge."""
    _rewrite(saved, lambda d: d["merges"].pop(0))  # later merges use the token it built
    with pytest.raises(TokenizerError, match="not two known tokens"):
        BPETokenizer.load(saved)


def test_an_old_files_merge_count_is_still_verified(saved):
    _old_format(saved)
    _rewrite(saved, lambda d: d["merges"].pop(3))
    with pytest.raises(TokenizerError, match="lists 42 merges but says n_merges=43"):
        BPETokenizer.load(saved)


def test_an_old_files_merges_checksum_is_still_verified(saved):
    _old_format(saved)
    _rewrite(saved, lambda d: d["merges"].__setitem__(0, "x y"))
    with pytest.raises(TokenizerError, match="do not match their checksum"):
        BPETokenizer.load(saved)


def test_deliberate_edit_without_checksum(saved, tok):
    _old_format(saved)

    def edit(d):
        del d["merges_sha256"]
        d["merges"][-1] = "x y"

    _rewrite(saved, edit)
    loaded = BPETokenizer.load(saved)  # accepted: the user removed the checksum on purpose
    assert loaded.vocab[-1] == b"xy" and loaded.merges[:-1] == tok.merges[:-1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["merges"].__setitem__(0, "t"), "not two known tokens"),
        (lambda d: d["merges"].__setitem__(0, "t h e"), "not two known tokens"),
        (lambda d: d["merges"].__setitem__(0, "t \u4e2d"), "not two known tokens"),
        (lambda d: d["merges"].__setitem__(1, d["merges"][0]), "already exists"),
        (lambda d: d.__setitem__("merges", "t h"), "'merges' is missing or not a list"),
        (lambda d: d.pop("pattern_regex"), "'pattern_regex' is missing"),
        (lambda d: d.__setitem__("format_version", 99), "newer than this gptlab reads"),
        (lambda d: d.pop("format_version"), "no integer 'format_version'"),
        (lambda d: d.__setitem__("kind", "char"), "'kind' is 'char'"),
        (lambda d: d.__setitem__("byte_order", [1, 2, 3]), "each of the 256 byte values"),
        (lambda d: d.__setitem__("special_tokens", {EOT: "x"}), "integer ids"),
        (lambda d: d.__setitem__("special_tokens", {EOT: 3}), "an ordinary token already uses"),
        (lambda d: d.__setitem__("pattern_regex", "(unclosed"), "not a valid regex"),
    ],
)
def test_hand_edited_json(saved, edit, message):
    _rewrite(saved, edit)
    with pytest.raises(TokenizerError, match=message):
        BPETokenizer.load(saved)


def test_not_a_json_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(TokenizerError, match="expected a JSON object"):
        BPETokenizer.load(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(TokenizerError, match="not UTF-8"):
        BPETokenizer.load(path)


def test_truncated_tiktoken_file(tok, tmp_path):
    ranks = tok.export_tiktoken(tmp_path / "tok.tiktoken")
    raw = ranks.read_bytes()
    cut = tmp_path / "cut.tiktoken"
    cut.write_bytes(raw[: len(raw) // 2 - 3])  # cuts inside a line
    with pytest.raises(TokenizerError, match=r"cut\.tiktoken, line \d+"):
        BPETokenizer.from_tiktoken_file(cut)
    cut.write_bytes(
        raw[: raw.index(b"\n", 100) + 1]
    )  # whole lines only, but the 256 byte tokens are not all there
    with pytest.raises(TokenizerError, match="ranks must be 0..n-1 with n >= 256"):
        BPETokenizer.load(cut)


def test_tiktoken_file_that_is_not_bpe(tmp_path):
    import base64

    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines.append(
        f"{base64.b64encode(b'abc').decode()} 256"
    )  # "abc" cannot be made from two earlier tokens
    path = tmp_path / "bad.tiktoken"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TokenizerError, match="cannot be built from two tokens"):
        BPETokenizer.from_tiktoken_file(path)


# ------------------------------------------------------------------ fields that change the encoding


def test_an_edited_split_pattern_breaks_its_checksum(saved):
    """merges_sha256 did not cover pattern_regex: an edited regex loaded silently."""
    _rewrite(saved, lambda d: d.__setitem__("pattern_regex", r"\w+|\s+|[^\w\s]+"))
    with pytest.raises(TokenizerError, match=r"do not match their checksum \(settings_sha256\)"):
        BPETokenizer.load(saved)


def test_an_edited_special_token_breaks_its_checksum(saved):
    _rewrite(saved, lambda d: d["special_tokens"].__setitem__(EOT, d["special_tokens"][EOT] + 1))
    with pytest.raises(TokenizerError, match="settings_sha256"):
        BPETokenizer.load(saved)


def test_a_split_pattern_that_drops_text_is_refused_on_load(saved):
    """A pattern_regex that matched only words silently dropped 95% of the probe's text."""

    def edit(d):
        d.pop("settings_sha256")  # a deliberate edit, the checksum removed
        d["pattern_regex"] = r"\w+"

    _rewrite(saved, edit)
    with pytest.raises(
        TokenizerError, match=r"does not match the characters .* silently drop them"
    ) as caught:
        BPETokenizer.load(saved)
    assert "\n" not in str(caught.value)


def test_a_custom_pattern_that_drops_unseen_characters_is_refused_when_encoding(tok):
    """The ASCII probe passes; the per-encoding byte count catches what it cannot see."""
    ascii_only = BPETokenizer(tok.merges, pattern=r"[\x00-\x7f]+")
    assert ascii_only.decode(ascii_only.encode("plain text")) == "plain text"
    for engine in ("python", "auto"):
        with pytest.raises(TokenizerError, match=r"skipped 2 of the 6 bytes"):
            ascii_only.encode("h\u00e9llo", engine=engine)
        with pytest.raises(TokenizerError, match="skipped"):
            ascii_only.encode_batch(["ok", "h\u00e9llo"], engine=engine)


def test_the_fingerprint_covers_the_split_pattern(tok):
    """The token-cache key is the fingerprint: another pattern must never reuse the cached ids."""
    other = BPETokenizer(tok.merges, pattern="gpt2", special_tokens=tok.special_tokens)
    assert other.fingerprint() != tok.fingerprint()


def test_a_special_token_id_far_past_the_vocabulary_is_refused(saved, tok):
    """Id 3,000,000,000 made the model ask for a 12-512 GB embedding table."""

    def edit(d):
        d.pop("settings_sha256")
        d["special_tokens"] = {EOT: 3_000_000_000}

    _rewrite(saved, edit)
    with pytest.raises(
        TokenizerError, match=r"special token '<\|endoftext\|>' has id 3,000,000,000, far past"
    ):
        BPETokenizer.load(saved)
    near = BPETokenizer(
        tok.merges, special_tokens={EOT: len(tok.vocab) + 20}
    )  # tiktoken-style gaps still load
    assert near.vocab_size == len(tok.vocab) + 21


def test_a_file_written_before_settings_sha256_still_loads(saved, tok):
    _rewrite(saved, lambda d: d.pop("settings_sha256"))
    assert BPETokenizer.load(saved).merges == tok.merges
