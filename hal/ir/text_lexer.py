"""The tokenizer of the `.hal` text format (see hal.ir.text for the grammar).

Tokens carry 1-based line and column; every malformed token (bad value name,
number, string escape, stray character) raises ParseError at its position.
Also the two helpers the printer shares with it: `is_ident` and `quote`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hal.errors import ParseError
from hal.ir.graph import _valid_name


def is_ident(s: str) -> bool:
    """Whether `s` reads back as one identifier token (else the printer quotes it)."""
    return (bool(s) and not ("0" <= s[0] <= "9")
            and all(ch.isalnum() or ch == "_" for ch in s))


def quote(s: str) -> str:
    """`s` as a double-quoted string literal; non-printable characters become escapes."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else
                       f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    out.append('"')
    return "".join(out)



@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "value", "int", "float", "string", "punct", "eof"
    text: str  # the source text (for strings: the decoded value)
    line: int
    col: int
    value: Any = None

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of file"
        if self.kind == "string":
            return quote(self.value)[:40]
        if self.kind == "value":
            return f"'%{self.text[:40]}'"
        return f"'{self.text[:40]}'"


_PUNCT = set("{}()[],:=-")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_HEX_LEN = {"x": 2, "u": 4, "U": 8}


class Lexer:
    def __init__(self, text: str, file: str):
        self.text, self.file = text, file
        self.i, self.line, self.col = 0, 1, 1

    def error(self, msg: str, line: int, col: int, **kw) -> ParseError:
        return ParseError(msg, file=self.file, line=line, column=col, **kw)

    def _advance(self, n: int = 1) -> None:
        for _ in range(n):
            if self.text[self.i] == "\n":
                self.line, self.col = self.line + 1, 1
            else:
                self.col += 1
            self.i += 1

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        text = self.text
        while True:
            while self.i < len(text):
                ch = text[self.i]
                if ch == "#":
                    while self.i < len(text) and text[self.i] != "\n":
                        self._advance()
                elif ch.isspace():
                    self._advance()
                else:
                    break
            if self.i >= len(text):
                out.append(Token("eof", "", self.line, self.col))
                return out
            out.append(self._token(text[self.i]))

    def _token(self, ch: str) -> Token:
        line, col, start = self.line, self.col, self.i
        if ch == "%":
            self._advance()
            j = self.i
            while j < len(self.text) and (self.text[j].isalnum() or self.text[j] in "_."):
                j += 1
            name = self.text[self.i:j]
            if not name or not _valid_name(name):
                raise self.error("bad value name", line, col,
                                 expected="a name after '%' (letters, digits, '_', '.')",
                                 found=repr(self.text[start:j + 1][:20]))
            self._advance(j - self.i)
            return Token("value", name, line, col)
        if "0" <= ch <= "9" or (ch == "." and self.i + 1 < len(self.text)
                                and "0" <= self.text[self.i + 1] <= "9"):
            return self._number(line, col)
        if ch == '"':
            return self._string(line, col)
        if ch.isalnum() or ch == "_":
            j = self.i
            while j < len(self.text) and (self.text[j].isalnum() or self.text[j] == "_"):
                j += 1
            word = self.text[self.i:j]
            self._advance(j - self.i)
            return Token("ident", word, line, col)
        if ch in _PUNCT:
            self._advance()
            return Token("punct", ch, line, col)
        raise self.error("unexpected character", line, col, found=repr(ch),
                         expected="a statement, value, name, number, string or punctuation")

    def _number(self, line: int, col: int) -> Token:
        t, j = self.text, self.i
        digits = "0123456789"
        while j < len(t) and t[j] in digits:
            j += 1
        is_float = False
        if j < len(t) and t[j] == ".":
            is_float = True
            j += 1
            while j < len(t) and t[j] in digits:
                j += 1
        if j < len(t) and t[j] in "eE":
            k = j + 1
            if k < len(t) and t[k] in "+-":
                k += 1
            if k < len(t) and t[k] in digits:
                is_float = True
                j = k
                while j < len(t) and t[j] in digits:
                    j += 1
        if j < len(t) and (t[j].isalnum() or t[j] in "_."):
            raise self.error("malformed number", line, col,
                             found=repr(t[self.i:j + 1][:30]), expected="a number")
        text = t[self.i:j]
        self._advance(j - self.i)
        try:
            value: Any = float(text) if is_float else int(text)
        except ValueError:
            raise self.error("number too long", line, col, found=repr(text[:30]),
                             expected="a number of at most 4300 digits") from None
        return Token("float" if is_float else "int", text, line, col, value)

    def _string(self, line: int, col: int) -> Token:
        t = self.text
        self._advance()  # opening quote
        chars: list[str] = []
        while True:
            if self.i >= len(t) or t[self.i] == "\n":
                raise self.error("unterminated string", line, col,
                                 expected="a closing '\"' on the same line",
                                 found="end of line" if self.i < len(t) else "end of file")
            ch = t[self.i]
            if ch == '"':
                self._advance()
                value = "".join(chars)
                return Token("string", value, line, col, value)
            if ch != "\\":
                chars.append(ch)
                self._advance()
                continue
            eline, ecol = self.line, self.col
            esc = t[self.i + 1] if self.i + 1 < len(t) else ""
            if esc in _ESCAPES:
                chars.append(_ESCAPES[esc])
                self._advance(2)
            elif esc in _HEX_LEN:
                n = _HEX_LEN[esc]
                digits = t[self.i + 2:self.i + 2 + n]
                if len(digits) != n or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.error("bad escape in string", eline, ecol,
                                     found=repr(t[self.i:self.i + 2 + n]),
                                     expected=f"\\{esc} and {n} hex digits")
                code = int(digits, 16)
                if code > 0x10FFFF:
                    raise self.error("bad escape in string", eline, ecol,
                                     found=repr(t[self.i:self.i + 2 + n]),
                                     expected="a code point up to \\U0010ffff")
                chars.append(chr(code))
                self._advance(2 + n)
            else:
                raise self.error("bad escape in string", eline, ecol, found=repr("\\" + esc),
                                 expected="one of \\\\ \\\" \\n \\t \\r \\0 \\x \\u \\U")
