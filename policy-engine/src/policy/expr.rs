//! A rule's CEL condition: compiled once, then checked statically against the context's
//! [`Schema`] and evaluated once against a fully populated sample context.
//!
//! `cel` 0.15 has no type checker, so this module walks the compiled expression itself: every
//! field path must exist in the context (`shadow.eror_rate` is refused where it is written),
//! operators must get operands of the right kind (CEL does no arithmetic across `int` and
//! `double`), and the result must be a `bool`. What the walk cannot type (a comprehension
//! variable, a function it does not know) is left to the sample evaluation.

use std::collections::{BTreeMap, BTreeSet};

use cel::common::ast::operators;
use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue};

use crate::context::{FieldType, ROOTS, RuleContext, Schema};

/// A problem in an expression, at a character offset within it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprProblem {
    /// Character offset in the expression source.
    pub offset: usize,
    /// A stable short code.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A compiled and checked condition.
#[derive(Debug)]
pub struct Checked {
    /// The program, ready to evaluate.
    pub program: cel::Program,
    /// The context fields it reads, sorted.
    pub fields: Vec<String>,
}

/// Compiles `source`, checks it against `schema` and evaluates it against `sample`.
pub fn check(
    source: &str,
    schema: &Schema,
    sample: &RuleContext,
) -> Result<Checked, Vec<ExprProblem>> {
    let program = cel::Program::compile(source).map_err(|errors| {
        errors
            .errors
            .iter()
            .map(|e| ExprProblem {
                offset: char_offset(source, e.pos.0, e.pos.1),
                code: "cel_syntax",
                message: format!("CEL syntax error: {}", e.msg),
            })
            .collect::<Vec<_>>()
    })?;
    let mut walker = Walker {
        schema,
        info: program.source_info(),
        scopes: Vec::new(),
        fields: BTreeSet::new(),
        problems: Vec::new(),
    };
    let root = program.expression();
    let ty = walker.infer(root);
    let (mut problems, fields) = (walker.problems, walker.fields);
    if problems.is_empty() && !matches!(ty, Ty::Bool | Ty::Dyn) {
        problems.push(ExprProblem {
            offset: first_offset(&program, root),
            code: "not_boolean",
            message: format!(
                "a rule's condition must be a bool, this one is {}",
                ty.name()
            ),
        });
    }
    if problems.is_empty() {
        let evaluated = sample
            .to_cel()
            .map_err(|e| e.to_string())
            .and_then(|ctx| program.execute(&ctx).map_err(|e| e.to_string()));
        match evaluated {
            Ok(cel::Value::Bool(_)) => {}
            Ok(other) => problems.push(ExprProblem {
                offset: 0,
                code: "not_boolean",
                message: format!(
                    "a rule's condition must be a bool, this one evaluates to {:?} on a sample context",
                    other
                ),
            }),
            Err(e) => problems.push(ExprProblem {
                offset: 0,
                code: "cel_eval",
                message: format!("evaluating the condition on a sample context failed: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(Checked {
            program,
            fields: fields.into_iter().collect(),
        })
    } else {
        Err(problems)
    }
}

/// The character offset of a 1-based (line, column) in `source`.
fn char_offset(source: &str, line: isize, column: isize) -> usize {
    let line = usize::try_from(line.max(1)).unwrap_or(1);
    let column = usize::try_from(column.max(1)).unwrap_or(1);
    let before: usize = source
        .split_inclusive('\n')
        .take(line - 1)
        .map(|l| l.chars().count())
        .sum();
    before + column - 1
}

/// The offset of the leftmost token of an expression (where a reader's eye starts).
fn first_offset(program: &cel::Program, e: &IdedExpr) -> usize {
    let own = offset(program.source_info(), e.id);
    let child = match &e.expr {
        Expr::Call(c) => c
            .target
            .as_deref()
            .or(c.args.first())
            .map(|x| first_offset(program, x)),
        Expr::Select(s) => Some(first_offset(program, &s.operand)),
        _ => None,
    };
    child.map_or(own, |c| c.min(own))
}

fn offset(info: &cel::common::ast::SourceInfo, id: u64) -> usize {
    info.offset_for(id)
        .map_or(0, |(start, _)| usize::try_from(start).unwrap_or(0))
}

/// The type the walk infers for an expression.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Bool,
    Int,
    UInt,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    /// A map with known keys (a part of the context).
    Object(String, BTreeMap<String, FieldType>),
    /// Unknown until evaluation.
    Dyn,
}

impl Ty {
    fn name(&self) -> String {
        match self {
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::UInt => "uint".into(),
            Ty::Double => "double".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Null => "null".into(),
            Ty::List => "list".into(),
            Ty::Map => "map".into(),
            Ty::Object(path, _) => format!("the map `{path}`"),
            Ty::Dyn => "dyn".into(),
        }
    }

    fn of_field(path: String, t: &FieldType) -> Ty {
        match t {
            FieldType::Bool => Ty::Bool,
            FieldType::Int => Ty::Int,
            FieldType::Double => Ty::Double,
            FieldType::String => Ty::String,
            FieldType::Object(fields) => Ty::Object(path, fields.clone()),
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, Ty::Int | Ty::UInt | Ty::Double)
    }
}

struct Walker<'a> {
    schema: &'a Schema,
    info: &'a cel::common::ast::SourceInfo,
    /// Comprehension variables in scope, innermost last.
    scopes: Vec<(String, Ty)>,
    fields: BTreeSet<String>,
    problems: Vec<ExprProblem>,
}

impl Walker<'_> {
    fn problem(&mut self, offset: usize, code: &'static str, message: String) {
        self.problems.push(ExprProblem {
            offset,
            code,
            message,
        });
    }

    fn infer(&mut self, e: &IdedExpr) -> Ty {
        let ty = match &e.expr {
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::UInt,
            },
            Expr::Ident(name) => self.ident(e, name),
            Expr::Select(s) => {
                let operand = self.infer(&s.operand);
                // The offset of a selection is its dot: the field name follows it.
                let at = offset(self.info, e.id) + 1;
                let t = self.field(at, &operand, &s.field);
                if s.test { Ty::Bool } else { t }
            }
            Expr::Call(call) => self.call(e, call),
            Expr::List(list) => {
                for x in &list.elements {
                    self.infer(x);
                }
                Ty::List
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(m) = &entry.expr {
                        self.infer(&m.key);
                        self.infer(&m.value);
                    }
                }
                Ty::Map
            }
            Expr::Struct(s) => {
                self.problem(
                    offset(self.info, e.id),
                    "unknown_reference",
                    format!("unknown type `{}`: the context declares no message types", s.type_name),
                );
                Ty::Dyn
            }
            Expr::Comprehension(c) => {
                let range = self.infer(&c.iter_range);
                let accu = self.infer(&c.accu_init);
                let item = match range {
                    Ty::Object(..) | Ty::Map => Ty::String,
                    _ => Ty::Dyn,
                };
                self.scopes.push((c.iter_var.clone(), item));
                if let Some(v2) = &c.iter_var2 {
                    self.scopes.push((v2.clone(), Ty::Dyn));
                }
                self.scopes.push((c.accu_var.clone(), accu));
                self.infer(&c.loop_cond);
                self.infer(&c.loop_step);
                let result = self.infer(&c.result);
                self.scopes.truncate(self.scopes.len() - 2 - usize::from(c.iter_var2.is_some()));
                result
            }
            Expr::Unspecified => Ty::Dyn,
        };
        if let Some(path) = self.path_of(e)
            && !matches!(ty, Ty::Object(..) | Ty::Dyn)
        {
            self.fields.insert(path);
        }
        ty
    }

    /// The context field path an expression spells, if it spells one (`compare.errors.p_value`).
    fn path_of(&self, e: &IdedExpr) -> Option<String> {
        match &e.expr {
            Expr::Ident(name) if self.scope(name).is_none() && self.schema.roots.contains_key(name) => {
                Some(name.clone())
            }
            Expr::Select(s) if !s.test => Some(format!("{}.{}", self.path_of(&s.operand)?, s.field)),
            Expr::Call(c) if c.func_name == operators::INDEX && c.args.len() == 2 => {
                match &c.args[1].expr {
                    Expr::Literal(LiteralValue::String(key)) => {
                        Some(format!("{}.{}", self.path_of(&c.args[0])?, key.inner()))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn scope(&self, name: &str) -> Option<&Ty> {
        self.scopes.iter().rev().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    fn ident(&mut self, e: &IdedExpr, name: &str) -> Ty {
        if let Some(t) = self.scope(name) {
            return t.clone();
        }
        match self.schema.roots.get(name) {
            Some(t) => Ty::of_field(name.to_string(), t),
            None => {
                self.problem(
                    offset(self.info, e.id),
                    "unknown_reference",
                    format!(
                        "unknown name `{name}`: the context has {}",
                        ROOTS.join(", ")
                    ),
                );
                Ty::Dyn
            }
        }
    }

    fn field(&mut self, at: usize, operand: &Ty, field: &str) -> Ty {
        match operand {
            Ty::Object(path, fields) => match fields.get(field) {
                Some(t) => Ty::of_field(format!("{path}.{field}"), t),
                None => {
                    let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                    let hint = if path.ends_with(".custom") {
                        " (declare custom metrics in traffic.custom_metrics)"
                    } else {
                        ""
                    };
                    self.problem(
                        at,
                        "unknown_reference",
                        format!(
                            "unknown field `{path}.{field}`: `{path}` has {}{hint}",
                            if known.is_empty() { "no fields".to_string() } else { known.join(", ") }
                        ),
                    );
                    Ty::Dyn
                }
            },
            Ty::Dyn | Ty::Map => Ty::Dyn,
            other => {
                self.problem(
                    at,
                    "unknown_reference",
                    format!("no field `{field}` on a value of type {}", other.name()),
                );
                Ty::Dyn
            }
        }
    }

    fn call(&mut self, e: &IdedExpr, call: &CallExpr) -> Ty {
        let at = offset(self.info, e.id);
        let target = call.target.as_deref().map(|t| self.infer(t));
        let args: Vec<Ty> = call.args.iter().map(|a| self.infer(a)).collect();
        let name = call.func_name.as_str();
        match name {
            operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT
            | operators::NOT_STRICTLY_FALSE => {
                for a in &args {
                    if !matches!(a, Ty::Bool | Ty::Dyn) {
                        let op = match name {
                            operators::LOGICAL_AND => "&&",
                            operators::LOGICAL_OR => "||",
                            _ => "!",
                        };
                        self.problem(
                            at,
                            "type_mismatch",
                            format!("`{op}` needs bool operands, got {}", a.name()),
                        );
                    }
                }
                Ty::Bool
            }
            operators::EQUALS | operators::NOT_EQUALS | operators::IN => Ty::Bool,
            operators::LESS | operators::LESS_EQUALS | operators::GREATER
            | operators::GREATER_EQUALS => {
                if let [a, b] = args.as_slice() {
                    let comparable = a == b
                        || matches!(a, Ty::Dyn)
                        || matches!(b, Ty::Dyn)
                        || (a.is_number() && b.is_number());
                    if !comparable {
                        self.problem(
                            at,
                            "type_mismatch",
                            format!("cannot order {} against {}", a.name(), b.name()),
                        );
                    }
                }
                Ty::Bool
            }
            operators::ADD | operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE
            | operators::MODULO => self.arithmetic(at, name, &args),
            operators::NEGATE => args.first().cloned().unwrap_or(Ty::Dyn),
            operators::CONDITIONAL => match args.as_slice() {
                [c, a, b] => {
                    if !matches!(c, Ty::Bool | Ty::Dyn) {
                        self.problem(
                            at,
                            "type_mismatch",
                            format!("the condition of `? :` must be a bool, got {}", c.name()),
                        );
                    }
                    if a == b { a.clone() } else { Ty::Dyn }
                }
                _ => Ty::Dyn,
            },
            operators::INDEX => match (args.first(), call.args.get(1).map(|k| &k.expr)) {
                (Some(obj @ Ty::Object(..)), Some(Expr::Literal(LiteralValue::String(key)))) => {
                    let at = offset(self.info, call.args[1].id);
                    self.field(at, &obj.clone(), key.inner())
                }
                _ => Ty::Dyn,
            },
            "size" | "int" => Ty::Int,
            "uint" => Ty::UInt,
            "double" => Ty::Double,
            "string" => Ty::String,
            "bool" | "contains" | "startsWith" | "endsWith" | "matches" => Ty::Bool,
            _ => {
                let _ = target;
                Ty::Dyn
            }
        }
    }

    fn arithmetic(&mut self, at: usize, op: &str, args: &[Ty]) -> Ty {
        let [a, b] = args else { return Ty::Dyn };
        match (a, b) {
            (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
            (x, y) if x == y && (x.is_number() || (op == operators::ADD && matches!(x, Ty::String | Ty::List))) => {
                x.clone()
            }
            (x, y) if x.is_number() && y.is_number() => {
                self.problem(
                    at,
                    "type_mismatch",
                    format!(
                        "CEL does no arithmetic across {} and {}: convert one side, e.g. double(...)",
                        x.name(),
                        y.name()
                    ),
                );
                Ty::Dyn
            }
            (x, y) => {
                self.problem(
                    at,
                    "type_mismatch",
                    format!("no arithmetic on {} and {}", x.name(), y.name()),
                );
                Ty::Dyn
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str) -> Result<Vec<String>, Vec<(usize, &'static str)>> {
        let custom = vec!["db".to_string()];
        check(src, &Schema::of(&custom), &RuleContext::sample(&custom))
            .map(|c| c.fields)
            .map_err(|p| p.into_iter().map(|p| (p.offset, p.code)).collect())
    }

    #[test]
    fn good_rules_pass_and_list_their_fields() {
        assert_eq!(
            run("compare.errors.worse && shadow.error_rate > 2.0 * primary.error_rate").unwrap(),
            vec!["compare.errors.worse", "primary.error_rate", "shadow.error_rate"]
        );
        assert_eq!(run("shadow.custom.db.p99 > 100.0").unwrap(), vec!["shadow.custom.db.p99"]);
        assert_eq!(run("shadow.custom['db'].p99 > 100.0").unwrap(), vec!["shadow.custom.db.p99"]);
        run("[1, 2].exists(x, x > 1) && has(shadow.latency)").unwrap();
        run("shadow.requests > 100 && shadow.latency.p99 > 250").unwrap();
    }

    #[test]
    fn unknown_fields_are_refused_where_written() {
        assert_eq!(run("shadow.eror_rate > 0.1"), Err(vec![(7, "unknown_reference")]));
        assert_eq!(run("true && shadw.requests > 1"), Err(vec![(8, "unknown_reference")]));
        assert_eq!(run("shadow.custom.cache.p99 > 1.0"), Err(vec![(14, "unknown_reference")]));
        assert_eq!(run("shadow.requests.x > 1"), Err(vec![(16, "unknown_reference")]));
    }

    #[test]
    fn non_boolean_and_mixed_arithmetic_are_refused() {
        assert_eq!(run("shadow.error_rate * 2.0"), Err(vec![(0, "not_boolean")]));
        assert_eq!(run("shadow.requests * 1.5 > 10.0"), Err(vec![(16, "type_mismatch")]));
        assert_eq!(run("shadow.requests && true"), Err(vec![(16, "type_mismatch")]));
    }

    #[test]
    fn syntax_errors_carry_their_offset() {
        let e = run("shadow.requests >").unwrap_err();
        assert_eq!(e[0], (17, "cel_syntax"));
    }
}
