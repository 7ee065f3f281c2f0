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

fn lex(src: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let pos = |i: usize| chars.get(i).map_or(src.len(), |&(p, _)| p);
    while let Some(c) = at(i) {
        let start = pos(i);
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => out.push((start, Token::LParen)),
            ')' => out.push((start, Token::RParen)),
            ',' => out.push((start, Token::Comma)),
            '+' => out.push((start, Token::Op(BinOp::Add))),
            '-' => out.push((start, Token::Op(BinOp::Sub))),
            '*' => out.push((start, Token::Op(BinOp::Mul))),
            '=' => out.push((start, Token::Op(BinOp::Eq))),
            '!' if at(i + 1) == Some('=') => {
                out.push((start, Token::Op(BinOp::Ne)));
                i += 1;
            }
            '<' | '>' => {
                let eq = at(i + 1) == Some('=');
                let op = match (c, eq) {
                    ('<', false) => BinOp::Lt,
                    ('<', true) => BinOp::Le,
                    ('>', false) => BinOp::Gt,
                    _ => BinOp::Ge,
                };
                out.push((start, Token::Op(op)));
                if eq {
                    i += 1;
                }
            }
            '\'' | '"' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    match at(i) {
                        None => {
                            return Err(ExprError::syntax(start, "unterminated string literal"));
                        }
                        Some(q) if q == quote => break,
                        Some(other) => text.push(other),
                    }
                    i += 1;
                }
                out.push((start, Token::Text(text)));
            }
            '$' => {
                if at(i + 1) != Some('{') {
                    return Err(ExprError::syntax(start, "expected '{' after '$'"));
                }
                i += 2;
                let mut name = String::new();
                loop {
                    match at(i) {
                        None => {
                            return Err(ExprError::syntax(start, "unterminated ${...} reference"));
                        }
                        Some('}') => break,
                        Some(ch) if ch.is_alphanumeric() || ch == '_' || ch == '-' || ch == '.' => {
                            name.push(ch)
                        }
                        Some(_) => {
                            return Err(ExprError::syntax(
                                pos(i),
                                "invalid character in field reference",
                            ));
                        }
                    }
                    i += 1;
                }
                if name.is_empty() {
                    return Err(ExprError::syntax(start, "empty field reference"));
                }
                out.push((start, Token::Ref(name)));
            }
            '.' if !at(i + 1).is_some_and(|d| d.is_ascii_digit()) => out.push((start, Token::Dot)),
            c if c.is_ascii_digit() || c == '.' => {
                let mut j = i;
                while at(j).is_some_and(|d| d.is_ascii_digit() || d == '.') {
                    j += 1;
                }
                let text = src.get(start..pos(j)).unwrap_or_default();
                let n: f64 = text
                    .parse()
                    .map_err(|_| ExprError::syntax(start, "malformed number"))?;
                out.push((start, Token::Number(n)));
                i = j;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while at(j).is_some_and(|d| d.is_ascii_alphanumeric() || d == '_' || d == '-') {
                    j += 1;
                }
                let word = src.get(start..pos(j)).unwrap_or_default();
                let token = match word {
                    "and" => Token::Op(BinOp::And),
                    "or" => Token::Op(BinOp::Or),
                    "div" => Token::Op(BinOp::Div),
                    "mod" => Token::Op(BinOp::Mod),
                    w => Token::Ident(w.to_owned()),
                };
                out.push((start, token));
                i = j;
                continue;
            }
            _ => return Err(ExprError::syntax(start, "unexpected character")),
        }
        i += 1;
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
