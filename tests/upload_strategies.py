"""Hypothesis strategies for hostile uploads: tar/zip/tar.gz/.bz2/.xz archives whose entries have the names,
types and sizes an attacker picks (links, devices, `..`, `./`, repeats, a file and a folder of one name,
names no file system takes, bombs of zeros), then possibly damaged (truncated, bytes flipped, garbage);
JSONL and CSV files mixing good rows with deep nesting, huge numbers, bad UTF-8 and long lines; and
multipart bodies with odd boundaries, headers and framing.

Shared by the direct parser fuzz test (tests/engine/test_fuzz_parsers.py) and the HTTP one
(tests/app/test_fuzz_uploads.py); the number of examples is DISTILLERY_FUZZ_EXAMPLES (tests/recipe_strategies.py).
"""

from __future__ import annotations

import csv
import io
import json
import stat
import tarfile
import warnings
import zipfile

from hypothesis import strategies as st

CONFIG = b'{"model_type": "bert"}'
PARTS = ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer_config.json", "sub", "a", ".", "..",
         "", "x" * 300, "\u00fc", "C:", "a\\b", "\x00", "a\nb", "-", "model.safetensors.index.json"]
PLAIN = ["config.json", "model.safetensors", "vocab.txt", "sub/notes.txt", "model/config.json",
         "model/model.safetensors", "tokenizer.json"]
names = st.one_of(st.sampled_from(PLAIN), st.sampled_from(PLAIN),
                  st.lists(st.sampled_from(PARTS), min_size=1, max_size=4).map("/".join),
                  st.lists(st.sampled_from(PARTS), min_size=1, max_size=3).map(lambda p: "./" + "/".join(p)),
                  st.sampled_from(["/", "./", "/etc/passwd", "../evil", "a/../../evil", "x" * 5000]),
                  st.text(max_size=40))
KINDS = ["file", "file", "file", "dir", "symlink", "hardlink", "fifo", "chr"]
contents = st.one_of(st.binary(max_size=512), st.just(CONFIG), st.sampled_from([b"[" * 50_000, b"{" * 10]),
                     st.integers(1, 4 * 1024**2))  # an int: that many zeros (a bomb when compressed)
entries = st.lists(st.tuples(names, st.sampled_from(KINDS), contents), max_size=6)
FORMATS = ["tar", "tar.gz", "tar.bz2", "tar.xz", "zip", "zip-deflated"]


def _data(content: bytes | int) -> bytes:
    return b"\0" * content if isinstance(content, int) else content


def build_archive(fmt: str, items: list[tuple[str, str, bytes | int]], valid_model: bool) -> bytes:
    """The archive's bytes; a valid model's two files first when asked, so later entries are what is tested."""
    if valid_model:
        items = [("config.json", "file", CONFIG), ("model.safetensors", "file", b"\1" * 64), *items]
    buf = io.BytesIO()
    if fmt.startswith("zip"):
        method = zipfile.ZIP_DEFLATED if fmt == "zip-deflated" else zipfile.ZIP_STORED
        with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", compression=method) as zf:
            warnings.simplefilter("ignore")  # duplicate names are what is tested
            for name, kind, content in items:
                info = zipfile.ZipInfo(name + ("/" if kind == "dir" and not name.endswith("/") else ""))
                mode = {"symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO, "chr": stat.S_IFCHR}.get(kind, stat.S_IFREG)
                info.external_attr = (mode | 0o644) << 16
                zf.writestr(info, b"" if kind == "dir" else _data(content))
        return buf.getvalue()
    mode = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[fmt]
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tf:
        for name, kind, content in items:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = "/etc/passwd" if len(name) % 2 else "../config.json"
            data = _data(content) if kind == "file" else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


@st.composite
def damaged(draw: st.DrawFn, blob: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "none", "truncate", "flip", "splice"]))
    if how == "none" or not blob:
        return blob
    at = draw(st.integers(0, len(blob) - 1))
    if how == "truncate":
        return blob[:at]
    if how == "flip":
        return blob[:at] + bytes([blob[at] ^ draw(st.integers(1, 255))]) + blob[at + 1:]
    return blob[:at] + draw(st.binary(min_size=1, max_size=64)) + blob[at + 1:]


@st.composite
def archives(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name with its suffix, archive bytes)."""
    fmt = draw(st.sampled_from(FORMATS))
    try:
        blob = build_archive(fmt, draw(entries), draw(st.sampled_from([True, True, True, False])))
    except (ValueError, UnicodeError, OverflowError, tarfile.TarError):
        blob = b"\x1f\x8b" + draw(st.binary(max_size=256))  # a name the writer refuses: garbage instead
    suffix = ".zip" if fmt.startswith("zip") else "." + fmt if fmt in ("tar", "tar.gz") else ".tar"
    return "upload" + suffix, draw(damaged(blob))


def _json_value() -> st.SearchStrategy:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                       max_size=3), max_leaves=8)


COLUMNS = ["text", "label", "text_a", "text_b", "score", "query", "positive", "context", "choices", "lable"]
good_row = st.sampled_from([{"text": "a fine row"}, {"text": "x", "label": 1}, {"text": "y", "label": "pos"},
                            {"text_a": "a", "text_b": "b", "score": 0.5}, {"query": "q", "positive": "p"},
                            {"context": "c", "choices": ["a", "b"], "label": 1}])
hostile_line = st.one_of(
    st.dictionaries(st.sampled_from(COLUMNS), _json_value(), max_size=4).map(json.dumps),
    good_row.map(json.dumps),
    st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n),
    st.integers(4000, 6000).map(lambda n: '{"text": "a", "label": ' + "9" * n + "}"),
    st.sampled_from(['{"text": NaN}', '{"text_a": "a", "text_b": "b", "score": Infinity}', "", "   ", "{", "\ufeff{}",
                     '{"text": "' + "w" * 70_000 + '"}']),
    st.text(max_size=60),
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    good = json.dumps(draw(good_row))  # one kind per file, mostly: a mix is refused at its second row
    lines = draw(st.lists(st.one_of(st.just(good), st.just(good), good_row.map(json.dumps), hostile_line),
                          min_size=1, max_size=6))
    blob = "\n".join(lines).encode("utf-8", "surrogatepass")
    return draw(st.one_of(st.just(blob), st.just(blob), damaged(blob), st.binary(max_size=200)))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.one_of(st.sampled_from([["text"], ["text", "label"], ["text_a", "text_b", "score"]]),
                            st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4)))
    cells = st.one_of(st.text(max_size=20), st.sampled_from(["1", "-3", "\u00b2", "9" * 5000, "nan", "1e999", "",
                                                             "a\nb", '"']))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=len(header) + 1), max_size=5))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    blob = out.getvalue().encode("utf-8", "surrogatepass")
    return draw(st.one_of(st.just(blob), damaged(blob), st.binary(max_size=200)))


# Header values must be latin-1 without CR or LF (what an HTTP client can send at all).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
boundaries = st.one_of(st.just("b0undary"), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                                    min_size=1, max_size=300), header_text)


@st.composite
def multipart_bodies(draw: st.DrawFn, file_field: str, payload: bytes, filename: str) -> tuple[bytes, dict[str, bytes]]:
    """(body, headers) of a multipart request carrying `payload`, its framing possibly wrong."""
    boundary = draw(boundaries)
    wire = draw(st.one_of(st.just(boundary), boundaries))  # the one the body uses: sometimes not the declared one
    nl = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        field_name = draw(st.sampled_from(["name", "file", "archive", "other", "", '"']))
        parts.append((f'Content-Disposition: form-data; name="{field_name}"', draw(st.binary(max_size=40))))
    fname = draw(st.one_of(st.just(filename), header_text))
    disposition = draw(st.sampled_from([f'form-data; name="{file_field}"; filename="{fname}"',
                                        f'form-data; name="{file_field}"', "form-data", "",
                                        f"form-data; name={file_field}; filename={fname}"]))
    parts.insert(draw(st.integers(0, len(parts))), (f"Content-Disposition: {disposition}", payload))
    body = b"".join(f"--{wire}{nl}{head}{nl}{nl}".encode("latin-1") + data + nl.encode() for head, data in parts)
    body += draw(st.sampled_from([f"--{wire}--{nl}", f"--{wire}--", "", f"--{wire}"])).encode("latin-1")
    content_type = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}",
                                         f'multipart/form-data; boundary="{boundary}"', "multipart/form-data",
                                         f"multipart/mixed; boundary={boundary}"]))
    # httpx sends a str header as ASCII, and h11 refuses a value with blanks at either end
    return draw(damaged(body)), {"content-type": content_type.strip(" \t").encode("latin-1")}
