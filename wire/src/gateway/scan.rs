//! JSON syntax checked as Go's `encoding/json` scanner checks it, because
//! etcd's gateway is Go and clients see its words: `invalid character 'x'
//! looking for beginning of value`, `unexpected EOF`, ... A port of the
//! state machine of Go's `scanner.go` (one step per byte, an explicit
//! stack, so no recursion however deep the input), resumable across body
//! chunks.

/// Go's `maxNestingDepth`.
const NESTING_DEPTH_MAX: usize = 10_000;

/// What one byte did (Go's `scan*` results, the ones callers look at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Continue,
    EndObject,
    EndArray,
    /// The value ended before this byte.
    End,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    BeginValue,
    BeginValueOrEmpty,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    EndTop,
    InString,
    InStringEsc,
    InStringEscU(u8),
    Neg,
    One,
    Zero,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    /// Inside `true`, `false` or `null`: the bytes still expected.
    Literal(&'static [u8], &'static str),
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parse {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

pub struct Scanner {
    state: State,
    stack: Vec<Parse>,
    err: Option<String>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::BeginValue,
            stack: Vec::new(),
            err: None,
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

impl Scanner {
    pub fn reset(&mut self) {
        self.state = State::BeginValue;
        self.stack.clear();
        self.err = None;
    }

    /// The syntax error, once `step` answered [`Op::Error`].
    pub fn error(&self) -> String {
        self.err.clone().unwrap_or_default()
    }

    fn fail(&mut self, c: u8, context: &str) -> Op {
        self.state = State::Error;
        self.err = Some(format!(
            "invalid character {} {context}",
            super::golang::quote_char(c)
        ));
        Op::Error
    }

    fn push(&mut self, c: u8, p: Parse) -> Op {
        self.stack.push(p);
        if self.stack.len() <= NESTING_DEPTH_MAX {
            Op::Continue
        } else {
            self.fail(c, "exceeded max depth")
        }
    }

    fn pop(&mut self) {
        self.stack.pop();
        self.state = if self.stack.is_empty() {
            State::EndTop
        } else {
            State::EndValue
        };
    }

    pub fn step(&mut self, c: u8) -> Op {
        match self.state {
            State::BeginValueOrEmpty => {
                if is_space(c) {
                    return Op::Continue;
                }
                if c == b']' {
                    return self.end_value(c);
                }
                self.begin_value(c)
            }
            State::BeginValue => self.begin_value(c),
            State::BeginStringOrEmpty => {
                if is_space(c) {
                    return Op::Continue;
                }
                if c == b'}' {
                    if let Some(top) = self.stack.last_mut() {
                        *top = Parse::ObjectValue;
                    }
                    return self.end_value(c);
                }
                self.begin_string(c)
            }
            State::BeginString => self.begin_string(c),
            State::EndValue => self.end_value(c),
            State::EndTop => {
                // As Go: the value is complete either way; a byte other
                // than space after it is an error for whoever reads on.
                if !is_space(c) {
                    self.fail(c, "after top-level value");
                }
                Op::End
            }
            State::InString => {
                if c == b'"' {
                    self.state = State::EndValue;
                } else if c == b'\\' {
                    self.state = State::InStringEsc;
                } else if c < 0x20 {
                    return self.fail(c, "in string literal");
                }
                Op::Continue
            }
            State::InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = State::InString;
                    Op::Continue
                }
                b'u' => {
                    self.state = State::InStringEscU(0);
                    Op::Continue
                }
                _ => self.fail(c, "in string escape code"),
            },
            State::InStringEscU(n) => {
                if !c.is_ascii_hexdigit() {
                    return self.fail(c, "in \\u hexadecimal character escape");
                }
                self.state = if n == 3 {
                    State::InString
                } else {
                    State::InStringEscU(n + 1)
                };
                Op::Continue
            }
            State::Neg => match c {
                b'0' => {
                    self.state = State::Zero;
                    Op::Continue
                }
                b'1'..=b'9' => {
                    self.state = State::One;
                    Op::Continue
                }
                _ => self.fail(c, "in numeric literal"),
            },
            State::One => {
                if c.is_ascii_digit() {
                    return Op::Continue;
                }
                self.zero(c)
            }
            State::Zero => self.zero(c),
            State::Dot => {
                if c.is_ascii_digit() {
                    self.state = State::Dot0;
                    return Op::Continue;
                }
                self.fail(c, "after decimal point in numeric literal")
            }
            State::Dot0 => {
                if c.is_ascii_digit() {
                    return Op::Continue;
                }
                if c == b'e' || c == b'E' {
                    self.state = State::E;
                    return Op::Continue;
                }
                self.end_value(c)
            }
            State::E => {
                if c == b'+' || c == b'-' {
                    self.state = State::ESign;
                    return Op::Continue;
                }
                self.e_sign(c)
            }
            State::ESign => self.e_sign(c),
            State::E0 => {
                if c.is_ascii_digit() {
                    return Op::Continue;
                }
                self.end_value(c)
            }
            State::Literal(rest, word) => {
                let Some((&want, more)) = rest.split_first() else {
                    return self.end_value(c);
                };
                if c != want {
                    let context = format!(
                        "in literal {word} (expecting {})",
                        super::golang::quote_char(want)
                    );
                    return self.fail(c, &context);
                }
                self.state = if more.is_empty() {
                    State::EndValue
                } else {
                    State::Literal(more, word)
                };
                Op::Continue
            }
            State::Error => Op::Error,
        }
    }

    fn begin_value(&mut self, c: u8) -> Op {
        if is_space(c) {
            return Op::Continue;
        }
        match c {
            b'{' => {
                self.state = State::BeginStringOrEmpty;
                self.push(c, Parse::ObjectKey)
            }
            b'[' => {
                self.state = State::BeginValueOrEmpty;
                self.push(c, Parse::ArrayValue)
            }
            b'"' => {
                self.state = State::InString;
                Op::Continue
            }
            b'-' => {
                self.state = State::Neg;
                Op::Continue
            }
            b'0' => {
                self.state = State::Zero;
                Op::Continue
            }
            b'1'..=b'9' => {
                self.state = State::One;
                Op::Continue
            }
            b't' => {
                self.state = State::Literal(b"rue", "true");
                Op::Continue
            }
            b'f' => {
                self.state = State::Literal(b"alse", "false");
                Op::Continue
            }
            b'n' => {
                self.state = State::Literal(b"ull", "null");
                Op::Continue
            }
            _ => self.fail(c, "looking for beginning of value"),
        }
    }

    fn begin_string(&mut self, c: u8) -> Op {
        if is_space(c) {
            return Op::Continue;
        }
        if c == b'"' {
            self.state = State::InString;
            return Op::Continue;
        }
        self.fail(c, "looking for beginning of object key string")
    }

    fn zero(&mut self, c: u8) -> Op {
        match c {
            b'.' => {
                self.state = State::Dot;
                Op::Continue
            }
            b'e' | b'E' => {
                self.state = State::E;
                Op::Continue
            }
            _ => self.end_value(c),
        }
    }

    fn e_sign(&mut self, c: u8) -> Op {
        if c.is_ascii_digit() {
            self.state = State::E0;
            return Op::Continue;
        }
        self.fail(c, "in exponent of numeric literal")
    }

    /// Go's `stateEndValue`.
    pub fn end_value(&mut self, c: u8) -> Op {
        let Some(&top) = self.stack.last() else {
            self.state = State::EndTop;
            return self.step(c);
        };
        if is_space(c) {
            self.state = State::EndValue;
            return Op::Continue;
        }
        match top {
            Parse::ObjectKey => {
                if c == b':' {
                    if let Some(t) = self.stack.last_mut() {
                        *t = Parse::ObjectValue;
                    }
                    self.state = State::BeginValue;
                    return Op::Continue;
                }
                self.fail(c, "after object key")
            }
            Parse::ObjectValue => {
                if c == b',' {
                    if let Some(t) = self.stack.last_mut() {
                        *t = Parse::ObjectKey;
                    }
                    self.state = State::BeginString;
                    return Op::Continue;
                }
                if c == b'}' {
                    self.pop();
                    return Op::EndObject;
                }
                self.fail(c, "after object key:value pair")
            }
            Parse::ArrayValue => {
                if c == b',' {
                    self.state = State::BeginValue;
                    return Op::Continue;
                }
                if c == b']' {
                    self.pop();
                    return Op::EndArray;
                }
                self.fail(c, "after array element")
            }
        }
    }
}

/// Go's `checkValid` + the words of `json.Unmarshal`: `data` must be one
/// whole value and nothing but white space around it.
pub fn check_valid(data: &[u8]) -> Result<(), String> {
    let mut s = Scanner::default();
    for &c in data {
        if s.step(c) == Op::Error {
            return Err(s.error());
        }
    }
    if s.err.is_some() {
        return Err(s.error());
    }
    if s.end_of_input() {
        Ok(())
    } else {
        Err("unexpected end of JSON input".into())
    }
}

impl Scanner {
    /// Go's `scanner.eof`: whether the input may end here (a value is
    /// complete).
    pub fn end_of_input(&mut self) -> bool {
        if self.state == State::Error {
            return false;
        }
        if self.state == State::EndTop {
            return true;
        }
        self.step(b' ');
        self.state == State::EndTop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        check_valid(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_are_gos_words() {
        assert_eq!(
            err("x"),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(err("{\"a\" 1}"), "invalid character '1' after object key");
        assert_eq!(
            err("{\"a\":1 \"b\"}"),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(
            err("{3}"),
            "invalid character '3' looking for beginning of object key string"
        );
        assert_eq!(err("[1 2]"), "invalid character '2' after array element");
        assert_eq!(
            err("tru}"),
            "invalid character '}' in literal true (expecting 'e')"
        );
        assert_eq!(
            err("\"\\x\""),
            "invalid character 'x' in string escape code"
        );
        assert_eq!(
            err("\"\\u12g4\""),
            "invalid character 'g' in \\u hexadecimal character escape"
        );
        assert_eq!(err("-x"), "invalid character 'x' in numeric literal");
        assert_eq!(
            err("1.x"),
            "invalid character 'x' after decimal point in numeric literal"
        );
        assert_eq!(
            err("1ex"),
            "invalid character 'x' in exponent of numeric literal"
        );
        assert_eq!(err("12a"), "invalid character 'a' after top-level value");
        assert_eq!(err("\"a\nb\""), "invalid character '\\n' in string literal");
        assert_eq!(
            err("\u{ff}"),
            "invalid character 'Ã' looking for beginning of value"
        );
        assert_eq!(err(""), "unexpected end of JSON input");
        assert_eq!(err("{\"a\":"), "unexpected end of JSON input");
        let deep = "[".repeat(NESTING_DEPTH_MAX + 1);
        assert_eq!(err(&deep), "invalid character '[' exceeded max depth");
    }

    #[test]
    fn valid_values_pass() {
        for v in [
            "{}",
            " [ ] ",
            "-0.5e+3",
            "{\"a\":[1,{\"b\":null}],\"c\":true}",
            "\"\\u00e9\"",
        ] {
            assert_eq!(check_valid(v.as_bytes()), Ok(()), "{v}");
        }
    }
}
