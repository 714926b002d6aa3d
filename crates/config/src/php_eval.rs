//! Evaluates the app's `config/*.php` files as PHP would, for the part of PHP config files use.
//!
//! Without a configuration cache, Laravel `require`s every `config/*.php` and keeps what each
//! returns. An app may have edited those files (a hard-coded prefix, another cache connection, a
//! table prefix), so reading `.env` with the stock defaults would find the wrong keys. We parse
//! each file with a real PHP parser (php-rs-parser) and evaluate the returned array.
//!
//! The subset: literals (strings with escapes, heredoc/nowdoc, numbers, booleans, null), arrays
//! (keys as PHP normalises them, spreads), `.` and arithmetic, comparisons, `&&`/`||`/`!`,
//! casts, `?:`, `??`, ternaries, top-level `$var = ...;` assignments and string interpolation;
//! `env()` with Laravel's mapping; `Str::slug/lower/upper` and `Env::get`; the path helpers
//! (`storage_path()`, `database_path()`...); `extension_loaded`, `array_filter`, `array_merge`,
//! `explode`, `implode`, `str_replace`, `trim` and a few string functions; `X::class`, the PDO
//! MySQL SSL constants and `PHP_EOL`-like constants; `use` imports.
//!
//! Anything else does not stop the evaluation: it becomes [`PhpValue::Unevaluated`], naming the
//! file, line and expression. Config files are full of values the worker never reads (service
//! providers built with `ServiceProvider::defaultProviders()->merge(...)`, closures), so such a
//! value is an error only when a setting the worker needs depends on it; the error then suggests
//! `php artisan config:cache`, whose output we read exactly.
//!
//! A config file is input, and a hostile or broken one must not take the worker down: the parse
//! and the evaluation run on a thread with a known stack, expressions nest at most
//! [`MAX_DEPTH`] levels, no string grows past [`MAX_STRING`] bytes, and a file gets
//! [`MAX_WORK`] units of work. Beyond a limit the file fails with one line naming the file, the
//! line and the limit, whatever value the expression was for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use php_ast::owned::{
    Arg, ArgKind, ArrayAccessExpr, ArrayElement, ArrayElementKind, BinaryExpr, Expr, ExprKind,
    Name, StaticAccessExpr, StaticMethodCallExpr, StmtKind, StringPart, TernaryExpr,
    UnaryPrefixExpr,
};
use php_ast::{AssignOp, BinaryOp, CastKind, MagicConstKind, NameKind, Span, UnaryPrefixOp};

use super::env_value::EnvValue;
use super::environment::Environment;
use super::php;
use super::php_value::{ArrayKey, PhpArray, PhpValue, Unevaluated};
use super::slug::slug;

/// Why a call whose named argument has no parameter of that name is not evaluated.
const NO_SLOT: &str = "passes arguments the function does not take";

/// How deeply expressions (and the values they build) may nest. Laravel's own files nest about
/// six levels; the evaluator recurses once per level.
pub(super) const MAX_DEPTH: usize = 256;

/// The longest string an expression may build: far above any host, prefix or password, far
/// below what would exhaust memory (`$a = $a . $a;` doubles a string on every line).
pub(super) const MAX_STRING: usize = 1 << 20;

/// The work one file may cost, in units of one per expression plus the size of what it
/// produces (a byte of string, `ENTRY_COST` per array entry). Laravel's files cost a few
/// thousand; this allows about 64 MiB of values built in all.
pub(super) const MAX_WORK: u64 = 64 << 20;

/// Work units charged per array entry: about the memory one entry takes.
const ENTRY_COST: u64 = 64;

/// The stack of the thread that parses and evaluates a file. php-rs-parser stops at 512 nested
/// levels (about 2 KiB of stack each in a release build, several times that in a debug
/// build) and the evaluator at [`MAX_DEPTH`]: the deepest inputs need under 16 MiB in a debug
/// build (4 MiB is too little), so 64 MiB leaves a wide margin. It is address space, not
/// memory: only the pages used are ever touched.
const EVAL_STACK: usize = 64 << 20;

/// What a config file's code can see.
pub(super) struct Context<'a> {
    /// The variables `env()` reads.
    pub env: &'a Environment,
    /// The app's root (`base_path()`).
    pub base_path: &'a Path,
}

/// A config file, evaluated.
#[derive(Debug, Clone)]
pub(super) struct EvaluatedFile {
    /// What the file returns.
    pub value: PhpValue,
    /// For entries whose value comes from `env()`, the variable it reads, by dotted path inside
    /// the file (`redis.cache.port` -> `REDIS_PORT`): errors name the variable to change.
    pub from_env: BTreeMap<String, String>,
    /// The line each value is written on, by dotted path (the first `MAX_LINES`): errors
    /// about a value send the reader to it.
    pub lines: BTreeMap<String, u32>,
}

/// How many values' lines a file records; enough for any real config file, and a bound on
/// the memory a file with a million entries can take for it.
const MAX_LINES: usize = 10_000;

/// Evaluates the PHP `source` of the config file at `file`. A syntax error fails, as it would
/// fail Laravel, and so does an expression beyond the evaluator's limits; anything else outside
/// the subset is left [`PhpValue::Unevaluated`].
pub(super) fn evaluate_file(
    file: &Path,
    source: &str,
    ctx: &Context,
) -> Result<EvaluatedFile, Unevaluated> {
    // The parser and the evaluator recurse on nesting; on a thread of our own the stack they
    // may use is known, whichever thread (and stack size) the caller runs on.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("config-eval".into())
            .stack_size(EVAL_STACK)
            .spawn_scoped(scope, || evaluate_on_this_thread(file, source, ctx))
            .map_err(|e| Unevaluated {
                file: file.to_path_buf(),
                line: 1,
                expression: String::new(),
                reason: format!("could not be evaluated: no thread to evaluate it on ({e})"),
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(Unevaluated {
                    file: file.to_path_buf(),
                    line: 1,
                    expression: String::new(),
                    reason: "could not be evaluated: the evaluator failed on it".into(),
                })
            })
    })
}

fn evaluate_on_this_thread(
    file: &Path,
    source: &str,
    ctx: &Context,
) -> Result<EvaluatedFile, Unevaluated> {
    let parsed = php_rs_parser::parse(source);
    let lines = &parsed.source_map;
    let line_of = |span: Span| lines.offset_to_line_col(span.start).to_one_based().0;
    if let Some(error) = parsed.errors.first() {
        let reason = match error {
            php_rs_parser::diagnostics::ParseError::NestingTooDeep { .. } => format!(
                "nests deeper than the PHP parser's limit ({error}); split that expression or array into variables"
            ),
            _ => format!("is a PHP syntax error ({error}); Laravel cannot load this file either"),
        };
        return Err(Unevaluated {
            file: file.to_path_buf(),
            line: line_of(error.span()),
            expression: snippet(source, error.span()),
            reason,
        });
    }
    let mut eval = Evaluator {
        ctx,
        file,
        source,
        line_of: &line_of,
        uses: BTreeMap::new(),
        vars: BTreeMap::new(),
        from_env: BTreeMap::new(),
        lines: BTreeMap::new(),
        depth: 0,
        work: 0,
        limit: None,
    };
    let value = eval.program(&parsed.program.stmts);
    if let Some(limit) = eval.limit {
        return Err(*limit);
    }
    Ok(EvaluatedFile {
        value,
        from_env: eval.from_env,
        lines: eval.lines,
    })
}

/// The source text of `span`, on one line and at most 80 characters.
fn snippet(source: &str, span: Span) -> String {
    let text = source
        .get(span.start as usize..span.end as usize)
        .unwrap_or("");
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(77).collect::<String>())
    } else {
        text
    }
}

struct Evaluator<'a> {
    ctx: &'a Context<'a>,
    file: &'a Path,
    source: &'a str,
    line_of: &'a dyn Fn(Span) -> u32,
    /// `use` imports: lower-case alias -> full class name.
    uses: BTreeMap<String, String>,
    /// Top-level variables.
    vars: BTreeMap<String, PhpValue>,
    from_env: BTreeMap<String, String>,
    lines: BTreeMap<String, u32>,
    /// Expressions being evaluated around the current one.
    depth: usize,
    /// Work spent so far (see [`MAX_WORK`]).
    work: u64,
    /// The first limit the file went past; once set, evaluation unwinds without more work.
    limit: Option<Box<Unevaluated>>,
}

/// The MySQL PDO attributes Laravel's stock files use, with their values on PHP 8 / mysqlnd.
const PDO_MYSQL_ATTRIBUTES: &[(&str, i64)] = &[
    ("SSL_KEY", 1007),
    ("SSL_CERT", 1008),
    ("SSL_CA", 1009),
    ("SSL_CAPATH", 1010),
    ("SSL_CIPHER", 1011),
    ("SSL_VERIFY_SERVER_CERT", 1014),
];

impl Evaluator<'_> {
    fn unevaluated(&self, span: Span, reason: impl Into<String>) -> PhpValue {
        PhpValue::Unevaluated(Box::new(self.located(span, reason.into())))
    }

    /// `reason`, at the expression of `span` in this file.
    fn located(&self, span: Span, reason: String) -> Unevaluated {
        Unevaluated {
            file: self.file.to_path_buf(),
            line: (self.line_of)(span),
            expression: snippet(self.source, span),
            reason,
        }
    }

    /// Records that the file went past a limit at `span` and returns a placeholder: the
    /// file's evaluation fails with this reason.
    fn over_limit(&mut self, span: Span, reason: String) -> PhpValue {
        if self.limit.is_none() {
            self.limit = Some(Box::new(self.located(span, reason)));
        }
        PhpValue::Null
    }

    /// Charges the cost of `value` (an expression just evaluated at `span`) and checks what it
    /// built against the limits.
    fn account(&mut self, span: Span, value: PhpValue) -> PhpValue {
        if let PhpValue::Str(s) = &value
            && s.len() > MAX_STRING
        {
            return self.over_limit(span, string_limit());
        }
        let budget = MAX_WORK.saturating_sub(self.work);
        match measure(&value, budget, MAX_DEPTH) {
            Measure::Cost(cost) => {
                self.work += cost + 1;
                value
            }
            Measure::TooDeep => self.over_limit(
                span,
                format!(
                    "builds arrays nested deeper than {MAX_DEPTH} levels, order-expire's limit"
                ),
            ),
            Measure::TooCostly => self.over_limit(span, work_limit()),
        }
    }

    /// Whether a string of `len` bytes may be built; records the limit at `span` when not.
    fn string_fits(&mut self, span: Span, len: usize) -> bool {
        if len > MAX_STRING {
            self.over_limit(span, string_limit());
            return false;
        }
        true
    }

    fn program(&mut self, stmts: &[php_ast::owned::Stmt]) -> PhpValue {
        for stmt in stmts {
            if self.limit.is_some() {
                return PhpValue::Null;
            }
            match &stmt.kind {
                StmtKind::Use(decl) => {
                    for item in decl.uses.iter() {
                        let full = item.name.as_str().trim_start_matches('\\').to_string();
                        let alias = match &item.alias {
                            Some(alias) => alias.or_error().to_string(),
                            None => item.name.last_part().to_string(),
                        };
                        self.uses.insert(alias.to_ascii_lowercase(), full);
                    }
                }
                StmtKind::Declare(_) | StmtKind::Nop | StmtKind::InlineHtml(_) => {}
                StmtKind::Expression(expr) => match &expr.kind {
                    ExprKind::Assign(assign) if assign.op == AssignOp::Assign && !assign.by_ref => {
                        let ExprKind::Variable(name) = &assign.target.kind else {
                            return self.unevaluated(
                                stmt.span,
                                "assigns to something other than a plain variable",
                            );
                        };
                        let value = self.eval(&assign.value);
                        self.vars.insert(name.to_string(), value);
                    }
                    _ => {
                        return self.unevaluated(
                            stmt.span,
                            "is a statement order-expire does not run (only `$var = ...;` and `return [...]`)",
                        );
                    }
                },
                StmtKind::Return(Some(expr)) => return self.eval_at(expr, Some("")),
                _ => {
                    return self.unevaluated(
                        stmt.span,
                        "is a statement order-expire does not run (only `use`, `$var = ...;` and `return [...]`)",
                    );
                }
            }
        }
        self.unevaluated(
            Span::new(0, 0),
            "returns no array (the file has no `return [...]`)",
        )
    }

    /// Evaluates `expr`, the value at `path` inside the file (when known), recording where
    /// `env()` values land.
    fn eval_at(&mut self, expr: &Expr, path: Option<&str>) -> PhpValue {
        if let Some(path) = path
            && !path.is_empty()
        {
            if self.lines.len() < MAX_LINES {
                self.lines
                    .insert(path.to_string(), (self.line_of)(expr.span));
            }
            if let Some(name) = first_env_name(expr, 0) {
                self.from_env.insert(path.to_string(), name);
            }
        }
        match &expr.kind {
            ExprKind::Array(elements) => {
                self.within_limits(expr, |this| this.array(elements, path))
            }
            _ => self.eval(expr),
        }
    }

    /// Runs `evaluate` for `expr` one level deeper, within [`MAX_DEPTH`] and [`MAX_WORK`].
    fn within_limits(
        &mut self,
        expr: &Expr,
        evaluate: impl FnOnce(&mut Self) -> PhpValue,
    ) -> PhpValue {
        if self.limit.is_some() {
            return PhpValue::Null;
        }
        if self.depth >= MAX_DEPTH {
            return self.over_limit(
                expr.span,
                format!("nests expressions deeper than {MAX_DEPTH} levels, order-expire's limit"),
            );
        }
        self.depth += 1;
        let value = evaluate(self);
        self.depth -= 1;
        if self.limit.is_some() {
            return PhpValue::Null;
        }
        self.account(expr.span, value)
    }

    fn eval(&mut self, expr: &Expr) -> PhpValue {
        self.within_limits(expr, |this| this.eval_unchecked(expr))
    }

    fn array(&mut self, elements: &[ArrayElement], path: Option<&str>) -> PhpValue {
        let mut array = PhpArray::default();
        for element in elements {
            match &element.kind {
                ArrayElementKind::Value(value_expr) => {
                    let key = match &element.key {
                        None => None,
                        Some(key_expr) => match self.eval(key_expr) {
                            u @ PhpValue::Unevaluated(_) => return u,
                            key => match array_key(&key) {
                                Some(k) => Some(k),
                                None => {
                                    return self
                                        .unevaluated(key_expr.span, "is not a valid array key");
                                }
                            },
                        },
                    };
                    let child = match (&key, path) {
                        (Some(k), Some("")) => Some(k.to_string()),
                        (Some(k), Some(p)) => Some(format!("{p}.{k}")),
                        _ => None,
                    };
                    let value = self.eval_at(value_expr, child.as_deref());
                    array.insert(key, value);
                }
                ArrayElementKind::Spread(inner) => match self.eval(inner) {
                    PhpValue::Array(entries) => array.append(&entries),
                    u @ PhpValue::Unevaluated(_) => return u,
                    _ => {
                        return self
                            .unevaluated(inner.span, "spreads something that is not an array");
                    }
                },
                _ => return self.unevaluated(element.span, "is a by-reference array element"),
            }
        }
        array.into_value()
    }

    /// One expression, dispatched on its kind; each kind with more to it than a line has its
    /// own step below.
    fn eval_unchecked(&mut self, expr: &Expr) -> PhpValue {
        let span = expr.span;
        match &expr.kind {
            ExprKind::Int(i) => PhpValue::Int(*i),
            ExprKind::Float(f) => PhpValue::Float(*f),
            ExprKind::String(s) => PhpValue::Str(s.to_string_lossy().into_owned()),
            ExprKind::Bool(b) => PhpValue::Bool(*b),
            ExprKind::Null => PhpValue::Null,
            ExprKind::InterpolatedString(parts) => self.interpolate(parts, span),
            ExprKind::Heredoc(heredoc) => self.interpolate(&heredoc.parts, span),
            ExprKind::Nowdoc(nowdoc) => PhpValue::Str(nowdoc.value.to_string()),
            ExprKind::Array(elements) => self.array(elements, None),
            ExprKind::Parenthesized(inner) => self.eval(inner),
            ExprKind::Variable(name) => self
                .vars
                .get(name.as_str())
                .cloned()
                .unwrap_or(PhpValue::Null),
            ExprKind::Name(name) => self.constant(name, span),
            ExprKind::MagicConst(kind) => self.magic_constant(kind, span),
            ExprKind::Cast(kind, inner) => {
                let value = self.eval(inner);
                self.cast(*kind, value, span)
            }
            ExprKind::UnaryPrefix(unary) => self.unary_prefix(unary, span),
            ExprKind::Binary(binary) => self.binary_expr(binary, span),
            ExprKind::Ternary(ternary) => self.ternary(ternary),
            ExprKind::NullCoalesce(coalesce) => match self.eval(&coalesce.left) {
                PhpValue::Null => self.eval(&coalesce.right),
                left => left,
            },
            ExprKind::ArrayAccess(access) => self.array_access(access, span),
            ExprKind::FunctionCall(call) => {
                let ExprKind::Name(name) = &call.name.kind else {
                    return self.unevaluated(span, "calls a function by a computed name");
                };
                let function = name.as_str().trim_start_matches('\\').to_ascii_lowercase();
                self.call(&function, &call.args, span)
            }
            ExprKind::StaticMethodCall(call) => self.static_method_call(call, span),
            ExprKind::ClassConstAccess(access) => self.class_constant(access, span),
            ExprKind::ArrowFunction(_) | ExprKind::Closure(_) => {
                self.unevaluated(span, "is a closure, which order-expire does not run")
            }
            _ => self.unevaluated(span, "is PHP order-expire does not evaluate"),
        }
    }

    /// `__DIR__`, `__FILE__`, `__LINE__` of the file being evaluated.
    fn magic_constant(&self, kind: &MagicConstKind, span: Span) -> PhpValue {
        match kind {
            MagicConstKind::Dir => PhpValue::Str(
                self.file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display()
                    .to_string(),
            ),
            MagicConstKind::File => PhpValue::Str(self.file.display().to_string()),
            MagicConstKind::Line => PhpValue::Int(i64::from((self.line_of)(span))),
            _ => PhpValue::Str(String::new()),
        }
    }

    /// `!x`, `-x`, `+x`.
    fn unary_prefix(&mut self, unary: &UnaryPrefixExpr, span: Span) -> PhpValue {
        let value = self.eval(&unary.operand);
        if let PhpValue::Unevaluated(_) = value {
            return value;
        }
        match unary.op {
            UnaryPrefixOp::BooleanNot => PhpValue::Bool(!value.truthy()),
            UnaryPrefixOp::Negate => match to_number(&value) {
                Some(PhpValue::Int(i)) => PhpValue::Int(i.wrapping_neg()),
                Some(PhpValue::Float(f)) => PhpValue::Float(-f),
                _ => self.unevaluated(span, "negates something that is not a number"),
            },
            UnaryPrefixOp::Plus => {
                to_number(&value).unwrap_or_else(|| self.unevaluated(span, "is not a number"))
            }
            _ => self.unevaluated(span, "uses an operator order-expire does not evaluate"),
        }
    }

    /// A binary operator, its right side evaluated only when the left does not decide.
    fn binary_expr(&mut self, binary: &BinaryExpr, span: Span) -> PhpValue {
        let left = self.eval(&binary.left);
        if let PhpValue::Unevaluated(_) = left {
            return left;
        }
        // `&&`, `||`, `and`, `or` and `??` do not evaluate their right side when the
        // left decides.
        match binary.op {
            BinaryOp::BooleanAnd | BinaryOp::LogicalAnd if !left.truthy() => {
                return PhpValue::Bool(false);
            }
            BinaryOp::BooleanOr | BinaryOp::LogicalOr if left.truthy() => {
                return PhpValue::Bool(true);
            }
            _ => {}
        }
        let right = self.eval(&binary.right);
        if let PhpValue::Unevaluated(_) = right {
            return right;
        }
        self.binary(binary.op, left, right, span)
    }

    /// `c ? a : b` and `c ?: b`.
    fn ternary(&mut self, ternary: &TernaryExpr) -> PhpValue {
        let condition = self.eval(&ternary.condition);
        if let PhpValue::Unevaluated(_) = condition {
            return condition;
        }
        match (&ternary.then_expr, condition.truthy()) {
            (None, true) => condition,
            (Some(then), true) => self.eval(then),
            (_, false) => self.eval(&ternary.else_expr),
        }
    }

    /// `$array[$key]`.
    fn array_access(&mut self, access: &ArrayAccessExpr, span: Span) -> PhpValue {
        let array = self.eval(&access.array);
        let Some(index) = &access.index else {
            return self.unevaluated(span, "appends to an array");
        };
        let index = self.eval(index);
        match (&array, array_key(&index)) {
            (PhpValue::Unevaluated(_), _) => array,
            (_, None) if matches!(index, PhpValue::Unevaluated(_)) => index,
            (PhpValue::Array(entries), Some(key)) => entries
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(PhpValue::Null, |(_, v)| v.clone()),
            // PHP: reading an offset of null is null (with a warning).
            (PhpValue::Null, _) => PhpValue::Null,
            _ => self.unevaluated(span, "reads an offset of something that is not an array"),
        }
    }

    /// `Str::slug(...)` and the few other static methods config files call.
    fn static_method_call(&mut self, call: &StaticMethodCallExpr, span: Span) -> PhpValue {
        let (ExprKind::Name(class), ExprKind::Identifier(method)) =
            (&call.class.kind, &call.method.kind)
        else {
            return self.unevaluated(span, "calls a method order-expire does not evaluate");
        };
        let class = self.class_name(class).to_ascii_lowercase();
        let method = method.to_ascii_lowercase();
        match (class.as_str(), method.as_str()) {
            ("illuminate\\support\\str" | "str", "slug" | "lower" | "upper") => {
                self.str_method(&method, &call.args, span)
            }
            ("illuminate\\support\\env" | "env", "get") => self.call("env", &call.args, span),
            _ => self.unevaluated(span, "calls a method order-expire does not evaluate"),
        }
    }

    /// `Foo::class` and the `PDO::MYSQL_ATTR_*` constants.
    fn class_constant(&self, access: &StaticAccessExpr, span: Span) -> PhpValue {
        let (ExprKind::Name(class), ExprKind::Identifier(member)) =
            (&access.class.kind, &access.member.kind)
        else {
            return self.unevaluated(span, "is a constant order-expire does not know");
        };
        let class = self.class_name(class);
        if member.eq_ignore_ascii_case("class") {
            return PhpValue::Str(class);
        }
        let attribute = match class.to_ascii_lowercase().as_str() {
            "pdo" => member.strip_prefix("MYSQL_ATTR_"),
            "pdo\\mysql" => member.strip_prefix("ATTR_"),
            _ => None,
        };
        PDO_MYSQL_ATTRIBUTES
            .iter()
            .find(|(name, _)| Some(*name) == attribute)
            .map_or_else(
                || self.unevaluated(span, "is a constant order-expire does not know"),
                |(_, value)| PhpValue::Int(*value),
            )
    }

    /// A double-quoted string or heredoc at `span`, with its `{$expressions}` filled in.
    fn interpolate(&mut self, parts: &[StringPart], span: Span) -> PhpValue {
        let mut text = String::new();
        for part in parts {
            let piece = match part {
                StringPart::Literal(bytes) => bytes.to_string_lossy().into_owned(),
                StringPart::Expr(e) => match self.eval(e) {
                    u @ PhpValue::Unevaluated(_) => return u,
                    value => string_of(&value),
                },
                _ => continue,
            };
            if !self.string_fits(span, text.len() + piece.len()) {
                return PhpValue::Null;
            }
            text.push_str(&piece);
        }
        PhpValue::Str(text)
    }

    /// A class name as PHP resolves it in a file without a namespace: through the `use`
    /// imports, else as written.
    fn class_name(&self, name: &Name) -> String {
        let text = name.as_str().trim_start_matches('\\');
        if name.kind == NameKind::FullyQualified {
            return text.to_string();
        }
        let (first, rest) = match text.split_once('\\') {
            Some((first, rest)) => (first, Some(rest)),
            None => (text, None),
        };
        match (self.uses.get(&first.to_ascii_lowercase()), rest) {
            (Some(full), Some(rest)) => format!("{full}\\{rest}"),
            (Some(full), None) => full.clone(),
            (None, _) => text.to_string(),
        }
    }

    fn constant(&self, name: &Name, span: Span) -> PhpValue {
        let text = name.as_str().trim_start_matches('\\');
        match text.to_ascii_lowercase().as_str() {
            "true" => return PhpValue::Bool(true),
            "false" => return PhpValue::Bool(false),
            "null" => return PhpValue::Null,
            _ => {}
        }
        match text {
            "PHP_EOL" => PhpValue::Str("\n".into()),
            "DIRECTORY_SEPARATOR" => PhpValue::Str("/".into()),
            "PATH_SEPARATOR" => PhpValue::Str(":".into()),
            "PHP_INT_MAX" => PhpValue::Int(i64::MAX),
            "PHP_INT_MIN" => PhpValue::Int(i64::MIN),
            "PHP_INT_SIZE" => PhpValue::Int(8),
            "PHP_OS" | "PHP_OS_FAMILY" => PhpValue::Str("Linux".into()),
            _ => self.unevaluated(span, "is a constant order-expire does not know"),
        }
    }

    fn cast(&self, kind: CastKind, value: PhpValue, span: Span) -> PhpValue {
        if let PhpValue::Unevaluated(_) = value {
            return value;
        }
        match kind {
            CastKind::Int => PhpValue::Int(match &value {
                PhpValue::Null => 0,
                PhpValue::Bool(b) => i64::from(*b),
                PhpValue::Int(i) => *i,
                // `as` truncates and saturates, like PHP 8 on 64-bit for finite values.
                PhpValue::Float(f) => *f as i64,
                PhpValue::Str(s) => php::int_cast(s),
                PhpValue::Array(a) => i64::from(!a.is_empty()),
                PhpValue::Unevaluated(_) => 0,
            }),
            CastKind::Float => PhpValue::Float(match &value {
                PhpValue::Null => 0.0,
                PhpValue::Bool(b) => f64::from(u8::from(*b)),
                PhpValue::Int(i) => *i as f64,
                PhpValue::Float(f) => *f,
                PhpValue::Str(s) => php::float_cast(s),
                PhpValue::Array(a) => f64::from(u8::from(!a.is_empty())),
                PhpValue::Unevaluated(_) => 0.0,
            }),
            CastKind::String => PhpValue::Str(string_of(&value)),
            CastKind::Bool => PhpValue::Bool(value.truthy()),
            CastKind::Array => match value {
                PhpValue::Null => PhpValue::Array(Vec::new()),
                PhpValue::Array(_) => value,
                scalar => PhpValue::Array(vec![(ArrayKey::Int(0), scalar)]),
            },
            CastKind::Unset => PhpValue::Null,
            _ => self.unevaluated(span, "is a cast order-expire does not evaluate"),
        }
    }

    fn binary(&self, op: BinaryOp, left: PhpValue, right: PhpValue, span: Span) -> PhpValue {
        use std::cmp::Ordering;
        let compare = || loose_compare(&left, &right);
        match op {
            BinaryOp::Concat => PhpValue::Str(string_of(&left) + &string_of(&right)),
            BinaryOp::BooleanAnd | BinaryOp::LogicalAnd => PhpValue::Bool(right.truthy()),
            BinaryOp::BooleanOr | BinaryOp::LogicalOr => PhpValue::Bool(right.truthy()),
            BinaryOp::LogicalXor => PhpValue::Bool(left.truthy() != right.truthy()),
            BinaryOp::Identical => PhpValue::Bool(identical(&left, &right)),
            BinaryOp::NotIdentical => PhpValue::Bool(!identical(&left, &right)),
            BinaryOp::Equal
            | BinaryOp::NotEqual
            | BinaryOp::Less
            | BinaryOp::Greater
            | BinaryOp::LessOrEqual
            | BinaryOp::GreaterOrEqual => {
                let Some(ordering) = compare() else {
                    return self.unevaluated(span, "compares values order-expire does not compare");
                };
                PhpValue::Bool(match op {
                    BinaryOp::Equal => ordering == Ordering::Equal,
                    BinaryOp::NotEqual => ordering != Ordering::Equal,
                    BinaryOp::Less => ordering == Ordering::Less,
                    BinaryOp::Greater => ordering == Ordering::Greater,
                    BinaryOp::LessOrEqual => ordering != Ordering::Greater,
                    _ => ordering != Ordering::Less,
                })
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
                let (Some(l), Some(r)) = (to_number(&left), to_number(&right)) else {
                    return self
                        .unevaluated(span, "does arithmetic on something that is not a number");
                };
                arithmetic(op, &l, &r)
                    .unwrap_or_else(|| self.unevaluated(span, "divides by zero or overflows"))
            }
            _ => self.unevaluated(span, "uses an operator order-expire does not evaluate"),
        }
    }

    /// Positional and named arguments, not yet evaluated; `None` for spreads.
    fn arguments(args: &[Arg]) -> Option<Vec<(Option<String>, &Expr)>> {
        args.iter()
            .map(|arg| match &arg.kind {
                ArgKind::Value(e) => Some((arg.name.as_ref().map(|n| n.as_str().to_string()), e)),
                _ => None,
            })
            .collect()
    }

    /// `args` put in the slots of the parameters `names`, as PHP binds positional and named
    /// arguments; `None` when an argument has no slot.
    fn bind<'e, const N: usize>(
        args: &[(Option<String>, &'e Expr)],
        names: [&str; N],
    ) -> Option<[Option<&'e Expr>; N]> {
        let mut slots = [None; N];
        for (i, (name, e)) in args.iter().enumerate() {
            let index = match name {
                Some(n) => names.iter().position(|p| p == n)?,
                None => i,
            };
            *slots.get_mut(index)? = Some(*e);
        }
        Some(slots)
    }

    /// A call of `function`: a path helper, `env()`, or one of the PHP functions config files
    /// use, its arguments evaluated in order as PHP does.
    fn call(&mut self, function: &str, args: &[Arg], span: Span) -> PhpValue {
        let Some(args) = Self::arguments(args) else {
            return self.unevaluated(span, "passes arguments order-expire does not evaluate");
        };
        if let Some(dir) = self.path_helper(function) {
            return self.call_path_helper(dir, &args, span);
        }
        // Every other function: evaluate the arguments in order, as PHP does (env()'s default
        // only when it is needed).
        if function == "env" {
            return self.call_env(&args, span);
        }
        let mut values = Vec::with_capacity(args.len());
        for (_, e) in &args {
            match self.eval(e) {
                u @ PhpValue::Unevaluated(_) => return u,
                v => values.push(v),
            }
        }
        let named = args.iter().any(|(n, _)| n.is_some());
        if named {
            return self.unevaluated(
                span,
                "passes named arguments to a function order-expire does not know them for",
            );
        }
        let result = match self.string_function(function, &values, span) {
            Some(value) => Some(value),
            None => self.other_function(function, &values, span),
        };
        result.unwrap_or_else(|| {
            self.unevaluated(
                span,
                format!("calls {function}(), which order-expire does not evaluate"),
            )
        })
    }

    /// The folder of Laravel's path helper `function` (`storage_path`), if it is one.
    fn path_helper(&self, function: &str) -> Option<PathBuf> {
        let base = self.ctx.base_path;
        Some(match function {
            "base_path" => base.to_path_buf(),
            "storage_path" => base.join("storage"),
            "database_path" => base.join("database"),
            "config_path" => base.join("config"),
            "app_path" => base.join("app"),
            "resource_path" => base.join("resources"),
            "public_path" => base.join("public"),
            _ => return None,
        })
    }

    /// `storage_path($path)` and its siblings: the folder, then `/$path` when not empty.
    fn call_path_helper(
        &mut self,
        dir: PathBuf,
        args: &[(Option<String>, &Expr)],
        span: Span,
    ) -> PhpValue {
        let Some([path]) = Self::bind(args, ["path"]) else {
            return self.unevaluated(span, NO_SLOT);
        };
        let sub = match path {
            Some(e) => match self.eval(e) {
                u @ PhpValue::Unevaluated(_) => return u,
                v => string_of(&v),
            },
            None => String::new(),
        };
        let mut text = dir.display().to_string();
        if !sub.is_empty() {
            text.push('/');
            text.push_str(&sub);
        }
        PhpValue::Str(text)
    }

    /// `env($key, $default)`: the variable as Laravel's `env()` maps it, else the default
    /// (called when it is a closure), evaluated only when it is needed.
    fn call_env(&mut self, args: &[(Option<String>, &Expr)], span: Span) -> PhpValue {
        let Some([key, default]) = Self::bind(args, ["key", "default"]) else {
            return self.unevaluated(span, NO_SLOT);
        };
        let Some(key_expr) = key else {
            return self.unevaluated(span, "calls env() without a variable name");
        };
        let key = match self.eval(key_expr) {
            PhpValue::Str(k) => k,
            u @ PhpValue::Unevaluated(_) => return u,
            _ => return self.unevaluated(span, "calls env() with a name that is not a string"),
        };
        let env = self.ctx.env;
        match env.get(&key) {
            Some(EnvValue::Null) => PhpValue::Null,
            Some(EnvValue::Bool(b)) => PhpValue::Bool(b),
            Some(EnvValue::Str(s)) => PhpValue::Str(s),
            None => match default {
                None => PhpValue::Null,
                Some(default) => match &default.kind {
                    // value($default): a closure default is called.
                    ExprKind::ArrowFunction(arrow) if arrow.params.is_empty() => {
                        self.eval(&arrow.body)
                    }
                    _ => self.eval(default),
                },
            },
        }
    }

    /// The string functions config files use, on evaluated arguments; `None` for another
    /// function or other arguments.
    fn string_function(
        &mut self,
        function: &str,
        values: &[PhpValue],
        span: Span,
    ) -> Option<PhpValue> {
        let text = |i: usize| values.get(i).map(string_of);
        match (function, values) {
            ("str_replace", [search, replace, subject])
                if [search, replace, subject]
                    .iter()
                    .all(|v| !matches!(v, PhpValue::Array(_))) =>
            {
                let search = string_of(search);
                let subject = string_of(subject);
                let replace = string_of(replace);
                if search.is_empty() {
                    Some(PhpValue::Str(subject))
                } else {
                    let matches = subject.matches(search.as_str()).count();
                    let len = subject.len() - matches * search.len()
                        + matches.saturating_mul(replace.len());
                    if !self.string_fits(span, len) {
                        return Some(PhpValue::Null);
                    }
                    Some(PhpValue::Str(subject.replace(&search, &replace)))
                }
            }
            ("strtolower", [_]) => text(0).map(|s| PhpValue::Str(s.to_ascii_lowercase())),
            ("strtoupper", [_]) => text(0).map(|s| PhpValue::Str(s.to_ascii_uppercase())),
            ("ucfirst", [_]) => text(0).map(|s| {
                let mut chars = s.chars();
                PhpValue::Str(match chars.next() {
                    Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => s,
                })
            }),
            ("trim" | "ltrim" | "rtrim", [_] | [_, _]) => {
                let subject = text(0).unwrap_or_default();
                let chars: Vec<char> = text(1)
                    .map(|c| c.chars().collect())
                    .unwrap_or_else(|| vec![' ', '\t', '\n', '\r', '\0', '\x0b']);
                let is_trimmed = |c: char| chars.contains(&c);
                Some(PhpValue::Str(match function {
                    "trim" => subject.trim_matches(is_trimmed).to_string(),
                    "ltrim" => subject.trim_start_matches(is_trimmed).to_string(),
                    _ => subject.trim_end_matches(is_trimmed).to_string(),
                }))
            }
            _ => None,
        }
    }

    /// The array, conversion and environment functions config files use, on evaluated
    /// arguments; `None` for another function or other arguments.
    fn other_function(
        &mut self,
        function: &str,
        values: &[PhpValue],
        span: Span,
    ) -> Option<PhpValue> {
        let text = |i: usize| values.get(i).map(string_of);
        match (function, values) {
            ("extension_loaded", [_]) => {
                // The extensions a Laravel app talking to MySQL and Redis has loaded.
                let name = text(0).unwrap_or_default().to_ascii_lowercase();
                Some(PhpValue::Bool(matches!(
                    name.as_str(),
                    "pdo"
                        | "pdo_mysql"
                        | "mysqlnd"
                        | "redis"
                        | "json"
                        | "mbstring"
                        | "openssl"
                        | "ctype"
                        | "tokenizer"
                        | "filter"
                )))
            }
            ("array_filter", [PhpValue::Array(entries)]) => Some(PhpValue::Array(
                entries
                    .iter()
                    .filter(|(_, v)| v.truthy())
                    .cloned()
                    .collect(),
            )),
            ("array_merge", arrays) if arrays.iter().all(|a| matches!(a, PhpValue::Array(_))) => {
                let mut merged = PhpArray::default();
                for array in arrays {
                    if let PhpValue::Array(entries) = array {
                        merged.append(entries);
                    }
                }
                Some(merged.into_value())
            }
            ("explode", [_, _]) => {
                let (separator, subject) =
                    (text(0).unwrap_or_default(), text(1).unwrap_or_default());
                (!separator.is_empty()).then(|| {
                    PhpValue::Array(
                        subject
                            .split(separator.as_str())
                            .enumerate()
                            .map(|(i, part)| (ArrayKey::Int(i as i64), PhpValue::Str(part.into())))
                            .collect(),
                    )
                })
            }
            ("implode", [glue, PhpValue::Array(entries)]) => {
                let glue = string_of(glue);
                let pieces: Vec<String> = entries.iter().map(|(_, v)| string_of(v)).collect();
                let len = pieces.iter().map(String::len).sum::<usize>()
                    + glue.len().saturating_mul(pieces.len());
                if !self.string_fits(span, len) {
                    return Some(PhpValue::Null);
                }
                Some(PhpValue::Str(pieces.join(&glue)))
            }
            ("intval", [v]) => Some(self.cast(CastKind::Int, v.clone(), span)),
            ("floatval", [v]) => Some(self.cast(CastKind::Float, v.clone(), span)),
            ("strval", [v]) => Some(PhpValue::Str(string_of(v))),
            ("boolval", [v]) => Some(PhpValue::Bool(v.truthy())),
            ("is_null", [v]) => Some(PhpValue::Bool(*v == PhpValue::Null)),
            _ => None,
        }
    }

    /// `Str::slug($title, $separator = '-', $language = 'en')`, `Str::lower`, `Str::upper`.
    fn str_method(&mut self, method: &str, args: &[Arg], span: Span) -> PhpValue {
        let Some(args) = Self::arguments(args) else {
            return self.unevaluated(span, "passes arguments order-expire does not evaluate");
        };
        let slots = match method {
            "slug" => Self::bind(&args, ["title", "separator", "language", "dictionary"]),
            _ => Self::bind(&args, ["value"]).map(|[value]| [value, None, None, None]),
        };
        let Some(slots) = slots else {
            return self.unevaluated(span, "passes arguments Str does not take");
        };
        let mut values: Vec<Option<PhpValue>> = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot.map(|e| self.eval(e)) {
                Some(u @ PhpValue::Unevaluated(_)) => return u,
                v => values.push(v),
            }
        }
        let text = values[0].as_ref().map(string_of).unwrap_or_default();
        match method {
            "lower" => PhpValue::Str(text.to_lowercase()),
            "upper" => PhpValue::Str(text.to_uppercase()),
            _ => {
                let separator = values[1].as_ref().map_or("-".to_string(), string_of);
                let language = values[2].as_ref().map_or("en".to_string(), string_of);
                let mut chars = separator.chars();
                match (chars.next(), chars.next(), language.as_str(), &values[3]) {
                    (Some(sep), None, "en", None) => PhpValue::Str(slug(&text, sep)),
                    _ => self.unevaluated(
                        span,
                        "calls Str::slug with a separator, language or dictionary order-expire does not evaluate",
                    ),
                }
            }
        }
    }
}

/// The first `env('NAME')` an expression reads, outside of defaults' own `env()` calls, looking
/// at most [`MAX_DEPTH`] levels down (`depth` levels are above `expr`): deeper, the evaluator
/// refuses the expression anyway.
fn first_env_name(expr: &Expr, depth: usize) -> Option<String> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let first_env_name = |e: &Expr| first_env_name(e, depth + 1);
    match &expr.kind {
        ExprKind::Parenthesized(inner) | ExprKind::Cast(_, inner) => first_env_name(inner),
        ExprKind::FunctionCall(call) => {
            let ExprKind::Name(name) = &call.name.kind else {
                return None;
            };
            if name
                .as_str()
                .trim_start_matches('\\')
                .eq_ignore_ascii_case("env")
            {
                return match call.args.first().map(|a| &a.kind) {
                    Some(ArgKind::Value(Expr {
                        kind: ExprKind::String(s),
                        ..
                    })) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                };
            }
            call.args.iter().find_map(|a| match &a.kind {
                ArgKind::Value(e) => first_env_name(e),
                _ => None,
            })
        }
        ExprKind::StaticMethodCall(call) => call.args.iter().find_map(|a| match &a.kind {
            ArgKind::Value(e) => first_env_name(e),
            _ => None,
        }),
        ExprKind::Binary(b) => first_env_name(&b.left).or_else(|| first_env_name(&b.right)),
        ExprKind::NullCoalesce(c) => first_env_name(&c.left).or_else(|| first_env_name(&c.right)),
        ExprKind::Ternary(t) => first_env_name(&t.condition)
            .or_else(|| t.then_expr.as_ref().and_then(&first_env_name))
            .or_else(|| first_env_name(&t.else_expr)),
        _ => None,
    }
}

/// The key PHP stores for `value`: decimal integer strings become integers, booleans and
/// floats integers, null the empty string.
fn array_key(value: &PhpValue) -> Option<ArrayKey> {
    match value {
        PhpValue::Int(i) => Some(ArrayKey::Int(*i)),
        PhpValue::Bool(b) => Some(ArrayKey::Int(i64::from(*b))),
        PhpValue::Float(f) => Some(ArrayKey::Int(*f as i64)),
        PhpValue::Null => Some(ArrayKey::Str(String::new())),
        PhpValue::Str(s) => {
            let canonical = s.parse::<i64>().ok().filter(|i| i.to_string() == *s);
            Some(canonical.map_or_else(|| ArrayKey::Str(s.clone()), ArrayKey::Int))
        }
        PhpValue::Array(_) | PhpValue::Unevaluated(_) => None,
    }
}

/// PHP's string conversion for `.` and interpolation (arrays become `Array`, with a warning).
fn string_of(value: &PhpValue) -> String {
    match value {
        PhpValue::Array(_) => "Array".into(),
        v => v.to_php_string().unwrap_or_default(),
    }
}

fn string_limit() -> String {
    format!(
        "builds a string longer than {} MiB, order-expire's limit",
        MAX_STRING >> 20
    )
}

fn work_limit() -> String {
    format!(
        "takes more work to evaluate than order-expire allows for one config file (about {} MiB of values built)",
        MAX_WORK >> 20
    )
}

/// What a value costs to build or copy, or why it is refused.
enum Measure {
    Cost(u64),
    /// Arrays nested deeper than allowed.
    TooDeep,
    /// More than the budget left.
    TooCostly,
}

/// The cost of `value` (bytes of strings, [`ENTRY_COST`] per array entry), walking at most
/// `budget` units and `depth` levels: the walk itself stays bounded.
fn measure(value: &PhpValue, budget: u64, depth: usize) -> Measure {
    match value {
        PhpValue::Str(s) if s.len() as u64 > budget => Measure::TooCostly,
        PhpValue::Str(s) => Measure::Cost(s.len() as u64),
        PhpValue::Array(_) if depth == 0 => Measure::TooDeep,
        PhpValue::Array(entries) => {
            let mut total: u64 = 0;
            for (key, entry) in entries {
                let key_cost = match key {
                    ArrayKey::Str(k) => k.len() as u64,
                    ArrayKey::Int(_) => 0,
                };
                total += ENTRY_COST + key_cost;
                if total > budget {
                    return Measure::TooCostly;
                }
                match measure(entry, budget - total, depth - 1) {
                    Measure::Cost(cost) => total += cost,
                    refused => return refused,
                }
            }
            Measure::Cost(total)
        }
        _ => Measure::Cost(0),
    }
}

/// The number PHP uses for a value in arithmetic; `None` for non-numeric strings and arrays
/// (a TypeError or warning in PHP 8).
fn to_number(value: &PhpValue) -> Option<PhpValue> {
    match value {
        PhpValue::Null => Some(PhpValue::Int(0)),
        PhpValue::Bool(b) => Some(PhpValue::Int(i64::from(*b))),
        PhpValue::Int(_) | PhpValue::Float(_) => Some(value.clone()),
        PhpValue::Str(s) if php::is_numeric(s) => {
            let t = s.trim();
            Some(match t.parse::<i64>() {
                Ok(i) => PhpValue::Int(i),
                Err(_) => PhpValue::Float(php::float_cast(t)),
            })
        }
        _ => None,
    }
}

fn as_float(v: &PhpValue) -> f64 {
    match v {
        PhpValue::Int(i) => *i as f64,
        PhpValue::Float(f) => *f,
        _ => 0.0,
    }
}

fn arithmetic(op: BinaryOp, l: &PhpValue, r: &PhpValue) -> Option<PhpValue> {
    if let (PhpValue::Int(a), PhpValue::Int(b)) = (l, r) {
        let exact = match op {
            BinaryOp::Add => a.checked_add(*b),
            BinaryOp::Sub => a.checked_sub(*b),
            BinaryOp::Mul => a.checked_mul(*b),
            BinaryOp::Mod => return a.checked_rem(*b).map(PhpValue::Int),
            _ => (*b != 0 && a % b == 0).then(|| a / b),
        };
        if let Some(i) = exact {
            return Some(PhpValue::Int(i));
        }
    }
    let (a, b) = (as_float(l), as_float(r));
    let result = match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div if b != 0.0 => a / b,
        _ => return None,
    };
    Some(PhpValue::Float(result))
}

/// `===`.
fn identical(a: &PhpValue, b: &PhpValue) -> bool {
    match (a, b) {
        (PhpValue::Array(x), PhpValue::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && identical(vx, vy))
        }
        _ => std::mem::discriminant(a) == std::mem::discriminant(b) && a == b,
    }
}

/// PHP 8's loose comparison (`==`, `<`, ...) of scalars; `None` for arrays.
fn loose_compare(a: &PhpValue, b: &PhpValue) -> Option<std::cmp::Ordering> {
    use PhpValue::{Bool, Float, Int, Null, Str};
    let numbers = |x: &PhpValue, y: &PhpValue| as_float(x).partial_cmp(&as_float(y));
    match (a, b) {
        (PhpValue::Array(_), _) | (_, PhpValue::Array(_)) => None,
        (Null, Null) => Some(std::cmp::Ordering::Equal),
        (Bool(_), _) | (_, Bool(_)) | (Null, Int(_) | Float(_)) | (Int(_) | Float(_), Null) => {
            Some(a.truthy().cmp(&b.truthy()))
        }
        (Null, Str(s)) => Some("".cmp(s.as_str())),
        (Str(s), Null) => Some(s.as_str().cmp("")),
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Int(_) | Float(_), Int(_) | Float(_)) => numbers(a, b),
        (Int(_) | Float(_), Str(s)) if php::is_numeric(s) => numbers(a, &to_number(b)?),
        (Str(s), Int(_) | Float(_)) if php::is_numeric(s) => numbers(&to_number(a)?, b),
        (Int(_) | Float(_), Str(s)) => Some(string_of(a).as_str().cmp(s.as_str())),
        (Str(s), Int(_) | Float(_)) => Some(s.as_str().cmp(string_of(b).as_str())),
        (Str(x), Str(y)) if php::is_numeric(x) && php::is_numeric(y) => {
            numbers(&to_number(a)?, &to_number(b)?)
        }
        (Str(x), Str(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_with(source: &str, env: &str) -> EvaluatedFile {
        let env = Environment::parse(env, Box::new(|_| None)).expect("valid .env");
        let ctx = Context {
            env: &env,
            base_path: Path::new("/app"),
        };
        evaluate_file(Path::new("/app/config/test.php"), source, &ctx).expect("parses")
    }

    fn eval(source: &str, env: &str) -> PhpValue {
        eval_with(source, env).value
    }

    fn text(value: &PhpValue, path: &str) -> Option<String> {
        value.lookup(path).and_then(PhpValue::to_php_string)
    }

    #[test]
    fn laravel_8_database_php_evaluates_as_in_php() {
        let source = include_str!("stock/laravel8/database.php");
        let file = eval_with(
            source,
            "APP_NAME=\"My Shop\"\nREDIS_CACHE_DB=3\nDB_PORT=3307",
        );
        let v = &file.value;
        assert_eq!(
            text(v, "redis.options.prefix").as_deref(),
            Some("my_shop_database_")
        );
        assert_eq!(text(v, "redis.cache.database").as_deref(), Some("3"));
        assert_eq!(v.lookup("redis.cache.password"), Some(&PhpValue::Null));
        assert_eq!(text(v, "connections.mysql.port").as_deref(), Some("3307"));
        assert_eq!(
            file.from_env
                .get("redis.options.prefix")
                .map(String::as_str),
            Some("REDIS_PREFIX")
        );
        assert_eq!(
            file.from_env
                .get("connections.mysql.port")
                .map(String::as_str),
            Some("DB_PORT")
        );
    }

    #[test]
    fn the_subset_of_php_config_files_use() {
        let source = r#"<?php
            use Illuminate\Support\Str as S;
            $base = env('BASE', 'shop');
            return [
                'concat' => $base.'_'.env('MISSING', 'x'),
                'interp' => "{$base}-db\t${base}",
                'nowdoc' => <<<'EOT'
                    raw $base
                    EOT,
                'int' => (int) '01',
                'bool' => (bool) env('FLAG'),
                'short' => env('EMPTY') ?: 'fallback',
                'coalesce' => env('NOPE') ?? 'dflt',
                'ternary' => PHP_INT_SIZE >= 8 ? 'wide' : 'narrow',
                'slug' => S::slug('Café Zürich', '_'),
                'fq' => \Illuminate\Support\Str::slug('A@B'),
                'class' => S::class,
                'ssl' => [PDO::MYSQL_ATTR_SSL_CA => 'ca.pem', \Pdo\Mysql::ATTR_SSL_KEY => 'k'],
                'filtered' => extension_loaded('pdo_mysql') ? array_filter(['a' => null, 'b' => 'x']) : [],
                'list' => explode(',', 'a,b'),
                'path' => storage_path('framework/cache'),
                'spread' => [...['x' => 1], 'y' => 2],
                'keys' => ['8' => 'int', '08' => 'str', true => 'one'],
                'math' => 60 * 24,
                'neg' => -5,
                'env_null' => env('NULLED', 'default not used'),
                'env_closure' => env('NOPE', fn () => 'called'),
            ];
        "#;
        let v = eval(source, "FLAG=true\nEMPTY=\nNULLED=null");
        let t = |p: &str| text(&v, p);
        assert_eq!(t("concat").as_deref(), Some("shop_x"));
        assert_eq!(t("interp").as_deref(), Some("shop-db\tshop"));
        assert_eq!(t("nowdoc").as_deref(), Some("raw $base"));
        assert_eq!(v.lookup("int"), Some(&PhpValue::Int(1)));
        assert_eq!(v.lookup("bool"), Some(&PhpValue::Bool(true)));
        assert_eq!(t("short").as_deref(), Some("fallback"));
        assert_eq!(t("coalesce").as_deref(), Some("dflt"));
        assert_eq!(t("ternary").as_deref(), Some("wide"));
        assert_eq!(t("slug").as_deref(), Some("cafe_zurich"));
        assert_eq!(t("fq").as_deref(), Some("a-at-b"));
        assert_eq!(t("class").as_deref(), Some("Illuminate\\Support\\Str"));
        assert_eq!(t("ssl.1009").as_deref(), Some("ca.pem"));
        assert_eq!(t("ssl.1007").as_deref(), Some("k"));
        assert_eq!(
            v.lookup("filtered"),
            Some(&PhpValue::Array(vec![(
                ArrayKey::Str("b".into()),
                PhpValue::Str("x".into())
            )]))
        );
        assert_eq!(t("list.1").as_deref(), Some("b"));
        assert_eq!(t("path").as_deref(), Some("/app/storage/framework/cache"));
        assert_eq!(v.lookup("spread.x"), Some(&PhpValue::Int(1)));
        assert_eq!(v.lookup("spread.y"), Some(&PhpValue::Int(2)));
        assert_eq!(t("keys.8").as_deref(), Some("int"));
        assert_eq!(t("keys.08").as_deref(), Some("str"));
        assert_eq!(t("keys.1").as_deref(), Some("one"));
        assert_eq!(v.lookup("math"), Some(&PhpValue::Int(1440)));
        assert_eq!(v.lookup("neg"), Some(&PhpValue::Int(-5)));
        assert_eq!(v.lookup("env_null"), Some(&PhpValue::Null));
        assert_eq!(t("env_closure").as_deref(), Some("called"));
    }

    #[test]
    fn what_is_outside_the_subset_is_named_only_where_it_is() {
        let source = "<?php\nreturn [\n    'ok' => 'yes',\n    'providers' => ServiceProvider::defaultProviders()->merge([])->toArray(),\n    'nested' => ['x' => gethostname()],\n];\n";
        let v = eval(source, "");
        assert_eq!(text(&v, "ok").as_deref(), Some("yes"));
        let Some(PhpValue::Unevaluated(u)) = v.lookup("providers") else {
            panic!("providers is unevaluated: {v:?}");
        };
        assert_eq!(u.line, 4);
        assert!(
            u.expression
                .starts_with("ServiceProvider::defaultProviders()"),
            "{u}"
        );
        let Some(PhpValue::Unevaluated(u)) = v.lookup("nested.x") else {
            panic!("nested.x is unevaluated");
        };
        assert!(
            u.to_string()
                .contains("config/test.php:5: `gethostname()` calls gethostname()"),
            "{u}"
        );
        // Below an unevaluated value, everything is unknown.
        assert!(matches!(
            v.lookup("providers.0.x"),
            Some(PhpValue::Unevaluated(_))
        ));
    }

    #[test]
    fn statements_outside_the_subset_make_the_file_unknown() {
        let v = eval("<?php\nif (true) { $a = 1; }\nreturn ['a' => 1];\n", "");
        assert!(matches!(v, PhpValue::Unevaluated(u) if u.line == 2));
        let v = eval("<?php\n// nothing returned\n", "");
        assert!(matches!(v, PhpValue::Unevaluated(_)));
    }

    #[test]
    fn syntax_errors_fail_with_the_line() {
        let env = Environment::parse("", Box::new(|_| None)).expect("valid .env");
        let ctx = Context {
            env: &env,
            base_path: Path::new("/app"),
        };
        let err = evaluate_file(
            Path::new("/app/config/cache.php"),
            "<?php\nreturn [\n  'a' => ,\n];\n",
            &ctx,
        )
        .expect_err("syntax error");
        assert_eq!(err.line, 3, "{err}");
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    fn evaluate(source: &str) -> Result<EvaluatedFile, Unevaluated> {
        let env = Environment::parse("", Box::new(|_| None)).expect("valid .env");
        let ctx = Context {
            env: &env,
            base_path: Path::new("/app"),
        };
        evaluate_file(Path::new("/app/config/app.php"), source, &ctx)
    }

    fn refused(source: &str) -> Unevaluated {
        match evaluate(source) {
            Ok(file) => panic!("must be refused, evaluated to {:.200?}", file.value),
            Err(u) => u,
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let n = 100_000;
        let chain = |op: &str| vec!["1"; n].join(op);
        for (what, source, limit) in [
            ("a + chain", chain(" + "), "256 levels"),
            ("a . chain", chain(" . "), "256 levels"),
            ("a ?? chain", chain(" ?? "), "parser's limit"),
            ("! prefixes", format!("{}1", "!".repeat(n)), "256 levels"),
            ("casts", format!("{}1", "(int) ".repeat(n)), "limit"),
            (
                "parentheses",
                format!("{}1{}", "(".repeat(n), ")".repeat(n)),
                "parser's limit",
            ),
            (
                "arrays",
                format!("{}1{}", "[".repeat(n), "]".repeat(n)),
                "parser's limit",
            ),
        ] {
            let u = refused(&format!("<?php\nreturn ['name' => {source}];\n"));
            assert_eq!(u.line, 2, "{what}: {u}");
            assert!(u.reason.contains(limit), "{what}: {u}");
            assert!(!u.to_string().contains('\n'), "{what}: one line: {u}");
        }
        // Just under the limits, the same shapes evaluate.
        let file = evaluate(&format!(
            "<?php\nreturn ['sum' => {}, 'not' => {}1];\n",
            vec!["1"; 200].join(" + "),
            "!".repeat(200)
        ))
        .expect("within the limits");
        assert_eq!(file.value.lookup("sum"), Some(&PhpValue::Int(200)));
        assert_eq!(file.value.lookup("not"), Some(&PhpValue::Bool(true)));
    }

    #[test]
    fn values_built_through_variables_are_bounded() {
        let doubling = format!(
            "<?php\n$a = 'x';\n{}return ['name' => $a];\n",
            "$a = $a . $a;\n".repeat(40)
        );
        let u = refused(&doubling);
        assert!(u.reason.contains("longer than 1 MiB"), "{u}");
        assert_eq!(u.line, 23, "the 21st doubling passes 1 MiB: {u}");

        let nesting = format!(
            "<?php\n$a = 1;\n{}return ['name' => $a];\n",
            "$a = [$a];\n".repeat(1000)
        );
        assert!(refused(&nesting).reason.contains("nested deeper than 256"));

        let arrays = format!(
            "<?php\n$a = [1];\n{}return ['name' => $a];\n",
            "$a = [$a, $a];\n".repeat(40)
        );
        assert!(refused(&arrays).reason.contains("more work"));

        let copies = "<?php\n$a = str_replace('x', 'xxxxxxxxxxxxxxxx', 'xxxxxxxxxxxxxxxx');\n$a = str_replace('x', $a, $a);\n$a = str_replace('x', $a, $a);\nreturn [];\n";
        assert!(refused(copies).reason.contains("longer than 1 MiB"));

        let interpolated = format!(
            "<?php\n$a = str_replace('x', '{}', 'x');\nreturn ['n' => \"{}\"];\n",
            "y".repeat(1000),
            "{$a}".repeat(2000)
        );
        assert!(refused(&interpolated).reason.contains("longer than 1 MiB"));

        let imploded = format!(
            "<?php\n$a = str_replace('x', '{}', 'x');\nreturn ['n' => implode($a, explode(',', '{}'))];\n",
            "y".repeat(1000),
            ",".repeat(2000)
        );
        assert!(refused(&imploded).reason.contains("longer than 1 MiB"));
    }

    #[test]
    fn big_arrays_are_built_in_linear_time() {
        // array_merge over 200k entries: quadratic insertion would take minutes.
        let source = format!(
            "<?php\nreturn ['list' => array_merge(explode(',', '{}'))];\n",
            ",".repeat(200_000)
        );
        let started = std::time::Instant::now();
        let file = evaluate(&source).expect("within the limits");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(file.value.lookup("list.200000"), Some(PhpValue::Str(s)) if s.is_empty()));
    }

    /// Random expressions built from a fixed seed: whatever the shape, the evaluator returns a
    /// value or a located refusal, and never panics or overflows.
    #[test]
    fn random_expressions_never_panic() {
        const ATOMS: &[&str] = &[
            "1",
            "0",
            "-7",
            "1.5",
            "'a'",
            "\"b{$v}\"",
            "null",
            "true",
            "$v",
            "$w",
            "env('X')",
            "env('NOPE', 3)",
            "PHP_EOL",
            "[]",
            "[1, 'k' => 2]",
            "PHP_INT_MAX",
            "'9223372036854775807'",
            "storage_path('x')",
            "Str::slug('A b')",
            "explode(',', 'a,b')",
            "gethostname()",
        ];
        const BINARY: &[&str] = &[
            " + ", " - ", " * ", " / ", " % ", " . ", " && ", " || ", " ?? ", " == ", " === ",
            " < ", " >= ", " <=> ", " and ", " xor ",
        ];
        const UNARY: &[&str] = &["!", "-", "+", "(int) ", "(string) ", "(array) ", "(bool) "];
        fn expr(rng: &mut fastrand::Rng, depth: u32) -> String {
            if depth == 0 || rng.u8(..4) == 0 {
                return ATOMS[rng.usize(..ATOMS.len())].to_string();
            }
            match rng.u8(..8) {
                0 => format!(
                    "{}{}",
                    UNARY[rng.usize(..UNARY.len())],
                    expr(rng, depth - 1)
                ),
                1 => format!("({})", expr(rng, depth - 1)),
                2 => format!(
                    "{} ? {} : {}",
                    expr(rng, depth - 1),
                    expr(rng, depth - 1),
                    expr(rng, depth - 1)
                ),
                3 => format!("[{} => {}]", expr(rng, depth - 1), expr(rng, depth - 1)),
                4 => format!("{}[{}]", expr(rng, depth - 1), expr(rng, depth - 1)),
                5 => format!(
                    "array_merge({}, {})",
                    expr(rng, depth - 1),
                    expr(rng, depth - 1)
                ),
                6 => {
                    let n = rng.usize(1..400);
                    let op = BINARY[rng.usize(..BINARY.len())];
                    vec![expr(rng, 0); n].join(op)
                }
                _ => format!(
                    "{}{}{}",
                    expr(rng, depth - 1),
                    BINARY[rng.usize(..BINARY.len())],
                    expr(rng, depth - 1)
                ),
            }
        }
        let mut rng = fastrand::Rng::with_seed(9);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut cases = 0;
        while cases < 600 && std::time::Instant::now() < deadline {
            let source = format!(
                "<?php\n$v = {};\n$w = $v . {};\nreturn ['a' => {}, 'b' => [{}]];\n",
                expr(&mut rng, 4),
                expr(&mut rng, 3),
                expr(&mut rng, 6),
                expr(&mut rng, 5)
            );
            match evaluate(&source) {
                Ok(file) => assert!(matches!(
                    file.value,
                    PhpValue::Array(_) | PhpValue::Unevaluated(_)
                )),
                Err(u) => assert!(u.line >= 1 && !u.reason.is_empty(), "{u}"),
            }
            cases += 1;
        }
        assert!(cases >= 50, "only {cases} cases ran in time");
    }

    /// The stock files with random bytes changed, dropped or repeated, from a fixed seed: a
    /// value or a located refusal, never a panic.
    #[test]
    fn mutated_config_files_never_panic() {
        let mut rng = fastrand::Rng::with_seed(5);
        let alphabet = b"()[]{}$'\".,=>?:!+-*/%0123456789 \n\\<<<EOTenv\xff";
        let stock = include_str!("stock/laravel8/database.php").as_bytes();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut cases = 0;
        while cases < 300 && std::time::Instant::now() < deadline {
            let mut bytes = stock.to_vec();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..bytes.len());
                match rng.u8(..3) {
                    0 => bytes[at] = alphabet[rng.usize(..alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => {
                        let end = (at + rng.usize(1..60)).min(bytes.len());
                        let piece = bytes[at..end].to_vec();
                        bytes.splice(at..at, piece);
                    }
                }
            }
            let _ = evaluate(&String::from_utf8_lossy(&bytes));
            cases += 1;
        }
        assert!(cases >= 30, "only {cases} cases ran in time");
    }

    #[test]
    fn loose_comparisons_follow_php_8() {
        use std::cmp::Ordering::*;
        let s = |x: &str| PhpValue::Str(x.into());
        assert_eq!(loose_compare(&PhpValue::Int(0), &s("a")), Some(Less));
        assert_eq!(loose_compare(&PhpValue::Int(1), &s("01")), Some(Equal));
        assert_eq!(loose_compare(&s("1e1"), &s("10")), Some(Equal));
        assert_eq!(
            loose_compare(&PhpValue::Null, &PhpValue::Bool(false)),
            Some(Equal)
        );
        assert_eq!(loose_compare(&PhpValue::Null, &s("")), Some(Equal));
        assert_eq!(
            loose_compare(&PhpValue::Int(80200), &PhpValue::Int(80500)),
            Some(Less)
        );
    }
}
