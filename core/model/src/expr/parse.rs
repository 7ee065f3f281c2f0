//! Lexer and Pratt parser for XLSForm-style expressions.
//!
//! Input is untrusted (form definitions arrive from a server and from desk users), so the parser
//! bounds the expression length and the nesting depth: a hostile `((((...` is an error, not a
//! stack overflow.

use super::ExprError;

pub const MAX_EXPRESSION_LEN: usize = 4096;
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    Number(f64),
    Text(String),
    /// `${name}`
    Ref(String),
    /// `.`: the value of the field the expression belongs to.
    Current,
    Neg(Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    Call(String, Vec<Ast>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinOp {
    fn precedence(self) -> u8 {
        match self {
            Self::Or => 1,
            Self::And => 2,
            Self::Eq | Self::Ne => 3,
            Self::Lt | Self::Le | Self::Gt | Self::Ge => 4,
            Self::Add | Self::Sub => 5,
            Self::Mul | Self::Div | Self::Mod => 6,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Text(String),
    Ref(String),
    Ident(String),
    Dot,
    LParen,
    RParen,
    Comma,
    Op(BinOp),
}

/// The characters of an expression with their byte offsets, read left to right.
struct Lexer<'s> {
    src: &'s str,
    chars: Vec<(usize, char)>,
}

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|&(_, c)| c)
    }

    fn pos(&self, i: usize) -> usize {
        self.chars.get(i).map_or(self.src.len(), |&(p, _)| p)
    }

    /// A quoted text starting at `i`; returns it and the index after its closing quote.
    fn text(&self, i: usize) -> Result<(Token, usize), ExprError> {
        let (start, quote) = (self.pos(i), self.at(i));
        let mut text = String::new();
        let mut j = i + 1;
        loop {
            match self.at(j) {
                None => return Err(ExprError::syntax(start, "unterminated string literal")),
                Some(q) if Some(q) == quote => return Ok((Token::Text(text), j + 1)),
                Some(other) => text.push(other),
            }
            j += 1;
        }
    }

    /// A `${name}` reference starting at `i`.
    fn reference(&self, i: usize) -> Result<(Token, usize), ExprError> {
        let start = self.pos(i);
        if self.at(i + 1) != Some('{') {
            return Err(ExprError::syntax(start, "expected '{' after '$'"));
        }
        let mut name = String::new();
        let mut j = i + 2;
        loop {
            match self.at(j) {
                None => return Err(ExprError::syntax(start, "unterminated ${...} reference")),
                Some('}') => break,
                Some(ch) if ch.is_alphanumeric() || ch == '_' || ch == '-' || ch == '.' => {
                    name.push(ch)
                }
                Some(_) => {
                    let m = "invalid character in field reference";
                    return Err(ExprError::syntax(self.pos(j), m));
                }
            }
            j += 1;
        }
        if name.is_empty() {
            return Err(ExprError::syntax(start, "empty field reference"));
        }
        Ok((Token::Ref(name), j + 1))
    }

    /// The end of the run of characters from `i` that `keep` accepts.
    fn run(&self, i: usize, keep: impl Fn(char) -> bool) -> usize {
        let mut j = i;
        while self.at(j).is_some_and(&keep) {
            j += 1;
        }
        j
    }

    fn number(&self, i: usize) -> Result<(Token, usize), ExprError> {
        let j = self.run(i, |d| d.is_ascii_digit() || d == '.');
        let start = self.pos(i);
        let text = self.src.get(start..self.pos(j)).unwrap_or_default();
        let n: f64 = text
            .parse()
            .map_err(|_| ExprError::syntax(start, "malformed number"))?;
        Ok((Token::Number(n), j))
    }

    /// A word: an operator (`and`, `or`, `div`, `mod`) or a function name.
    fn word(&self, i: usize) -> (Token, usize) {
        let j = self.run(i, |d| d.is_ascii_alphanumeric() || d == '_' || d == '-');
        let word = self.src.get(self.pos(i)..self.pos(j)).unwrap_or_default();
        let token = match word {
            "and" => Token::Op(BinOp::And),
            "or" => Token::Op(BinOp::Or),
            "div" => Token::Op(BinOp::Div),
            "mod" => Token::Op(BinOp::Mod),
            w => Token::Ident(w.to_owned()),
        };
        (token, j)
    }

    /// An operator or punctuation of one or two characters at `i`.
    fn symbol(&self, i: usize, c: char) -> Option<(Token, usize)> {
        let two = self.at(i + 1) == Some('=');
        Some(match c {
            '(' => (Token::LParen, i + 1),
            ')' => (Token::RParen, i + 1),
            ',' => (Token::Comma, i + 1),
            '+' => (Token::Op(BinOp::Add), i + 1),
            '-' => (Token::Op(BinOp::Sub), i + 1),
            '*' => (Token::Op(BinOp::Mul), i + 1),
            '=' => (Token::Op(BinOp::Eq), i + 1),
            '!' if two => (Token::Op(BinOp::Ne), i + 2),
            '<' if two => (Token::Op(BinOp::Le), i + 2),
            '<' => (Token::Op(BinOp::Lt), i + 1),
            '>' if two => (Token::Op(BinOp::Ge), i + 2),
            '>' => (Token::Op(BinOp::Gt), i + 1),
            '.' if !self.at(i + 1).is_some_and(|d| d.is_ascii_digit()) => (Token::Dot, i + 1),
            _ => return None,
        })
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let lexer = Lexer {
        src,
        chars: src.char_indices().collect(),
    };
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = lexer.at(i) {
        let start = lexer.pos(i);
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (token, next) = if let Some(symbol) = lexer.symbol(i, c) {
            symbol
        } else {
            match c {
                '\'' | '"' => lexer.text(i)?,
                '$' => lexer.reference(i)?,
                c if c.is_ascii_digit() || c == '.' => lexer.number(i)?,
                c if c.is_ascii_alphabetic() || c == '_' => lexer.word(i),
                _ => return Err(ExprError::syntax(start, "unexpected character")),
            }
        };
        out.push((start, token));
        i = next;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }
    fn pos(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(p, _)| *p)
    }
    fn bump(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.next).map(|(_, t)| t.clone());
        self.next += 1;
        t
    }

    fn expr(&mut self, min_prec: u8, depth: usize) -> Result<Ast, ExprError> {
        if depth > MAX_DEPTH {
            return Err(ExprError::new(
                "expr_too_deep",
                format!("expression nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let mut lhs = self.unary(depth)?;
        // Each operator of a chain deepens the (left-leaning) tree by one: count it, so that
        // `1+1+…+1` is bounded like `((…))` and no later recursion can exhaust a small stack.
        let mut depth = depth;
        while let Some(Token::Op(op)) = self.peek() {
            let op = *op;
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            self.bump();
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(ExprError::new(
                    "expr_too_deep",
                    format!("expression nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            // All operators are left-associative.
            let rhs = self.expr(prec + 1, depth)?;
            lhs = Ast::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self, depth: usize) -> Result<Ast, ExprError> {
        if depth > MAX_DEPTH {
            return Err(ExprError::new(
                "expr_too_deep",
                format!("expression nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let pos = self.pos();
        match self.bump() {
            Some(Token::Op(BinOp::Sub)) => Ok(Ast::Neg(Box::new(self.unary(depth + 1)?))),
            Some(Token::Number(n)) => Ok(Ast::Number(n)),
            Some(Token::Text(s)) => Ok(Ast::Text(s)),
            Some(Token::Ref(r)) => Ok(Ast::Ref(r)),
            Some(Token::Dot) => Ok(Ast::Current),
            Some(Token::LParen) => {
                let inner = self.expr(0, depth + 1)?;
                self.expect_rparen()?;
                Ok(inner)
            }
            Some(Token::Ident(name)) => {
                if self.peek() != Some(&Token::LParen) {
                    return Err(ExprError::syntax(
                        pos,
                        "a name must be a function call like name(...) or a ${field} reference",
                    ));
                }
                self.bump();
                let mut args = Vec::new();
                if self.peek() == Some(&Token::RParen) {
                    self.bump();
                    return Ok(Ast::Call(name, args));
                }
                loop {
                    args.push(self.expr(0, depth + 1)?);
                    match self.bump() {
                        Some(Token::Comma) => continue,
                        Some(Token::RParen) => break,
                        _ => {
                            return Err(ExprError::syntax(
                                self.pos(),
                                "expected ',' or ')' in argument list",
                            ));
                        }
                    }
                }
                Ok(Ast::Call(name, args))
            }
            Some(_) => Err(ExprError::syntax(pos, "unexpected token")),
            None => Err(ExprError::syntax(pos, "unexpected end of expression")),
        }
    }

    fn expect_rparen(&mut self) -> Result<(), ExprError> {
        match self.bump() {
            Some(Token::RParen) => Ok(()),
            _ => Err(ExprError::syntax(self.pos(), "expected ')'")),
        }
    }
}

/// Parses one expression into its syntax tree.
pub fn parse(src: &str) -> Result<Ast, ExprError> {
    if src.len() > MAX_EXPRESSION_LEN {
        return Err(ExprError::new(
            "expr_too_long",
            format!("expression longer than {MAX_EXPRESSION_LEN} bytes"),
        ));
    }
    let tokens = lex(src)?;
    if tokens.is_empty() {
        return Err(ExprError::syntax(0, "empty expression"));
    }
    let mut p = Parser {
        tokens,
        next: 0,
        end: src.len(),
    };
    let ast = p.expr(0, 0)?;
    if p.next < p.tokens.len() {
        return Err(ExprError::syntax(
            p.pos(),
            "unexpected text after the end of the expression",
        ));
    }
    Ok(ast)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: &str) -> Box<Ast> {
        Box::new(Ast::Ref(n.into()))
    }

    #[test]
    fn precedence_and_associativity() {
        let ast = parse("${a} + ${b} * 2 > 3 and not(${c}) or ${d} = 'x'").unwrap();
        let expected = Ast::Binary(
            BinOp::Or,
            Box::new(Ast::Binary(
                BinOp::And,
                Box::new(Ast::Binary(
                    BinOp::Gt,
                    Box::new(Ast::Binary(
                        BinOp::Add,
                        r("a"),
                        Box::new(Ast::Binary(BinOp::Mul, r("b"), Box::new(Ast::Number(2.0)))),
                    )),
                    Box::new(Ast::Number(3.0)),
                )),
                Box::new(Ast::Call("not".into(), vec![Ast::Ref("c".into())])),
            )),
            Box::new(Ast::Binary(
                BinOp::Eq,
                r("d"),
                Box::new(Ast::Text("x".into())),
            )),
        );
        assert_eq!(ast, expected);
        assert_eq!(
            parse("10 - 3 - 2").unwrap(),
            Ast::Binary(
                BinOp::Sub,
                Box::new(Ast::Binary(
                    BinOp::Sub,
                    Box::new(Ast::Number(10.0)),
                    Box::new(Ast::Number(3.0))
                )),
                Box::new(Ast::Number(2.0))
            )
        );
    }

    #[test]
    fn hyphenated_functions_div_mod_and_current() {
        assert_eq!(
            parse("count-selected(.) div 2 mod 3").unwrap(),
            Ast::Binary(
                BinOp::Mod,
                Box::new(Ast::Binary(
                    BinOp::Div,
                    Box::new(Ast::Call("count-selected".into(), vec![Ast::Current])),
                    Box::new(Ast::Number(2.0))
                )),
                Box::new(Ast::Number(3.0))
            )
        );
        assert_eq!(parse(".5").unwrap(), Ast::Number(0.5));
        assert_eq!(parse("-${x}").unwrap(), Ast::Neg(r("x")));
        assert_eq!(parse("today()").unwrap(), Ast::Call("today".into(), vec![]));
        assert_eq!(parse("\"彝族\"").unwrap(), Ast::Text("彝族".into()));
    }

    #[test]
    fn malformed_input_is_an_error_with_a_code() {
        for bad in [
            "", "${a", "${}", "'abc", "1 +", "(1", "f(1,", "foo", "1 2", "$a", "1..2", "${a b}",
            "#", "and",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.code.starts_with("expr_"), "{bad}: {}", err.code);
        }
    }

    #[test]
    fn hostile_nesting_is_refused_without_overflow() {
        let deep = format!("{}1{}", "(".repeat(1000), ")".repeat(1000));
        assert_eq!(parse(&deep).unwrap_err().code, "expr_too_deep");
        let negs = format!("{}1", "-".repeat(1000));
        assert_eq!(parse(&negs).unwrap_err().code, "expr_too_deep");
        let long = "1+".repeat(3000) + "1";
        assert_eq!(parse(&long).unwrap_err().code, "expr_too_long");
        let chain = "1+".repeat(1500) + "1";
        assert_eq!(parse(&chain).unwrap_err().code, "expr_too_deep");
        // A realistic long condition is fine.
        let alternatives = (0..40)
            .map(|i| format!("${{t}} = '{i}'"))
            .collect::<Vec<_>>()
            .join(" or ");
        assert!(parse(&alternatives).is_ok());
    }
}
