//! Definition forms: one input per field of the JSON request a form stands for, named by
//! that field's path (`variants[1].weight`, `policy.alpha`), so that every problem the
//! application reports about a field is shown next to the input it is about.
//!
//! A form is a list of [`Input`]s. Reading a posted form ([`Form::read`]) turns each input's
//! text into JSON by its [`Kind`] (a number, a whole number, JSON, a checkbox, a choice) and
//! sets it at the input's path over a base document (nothing for a new experiment, the
//! current definition for an edit). Text that is not what its kind needs is a problem of that
//! input; so is anything the request type then refuses to deserialize, and anything the
//! application's validation reports, each placed by [`Form::place`].

use std::collections::{BTreeMap, HashMap};

use maud::{Markup, html};
use serde_json::{Map, Value};

/// What an input holds and how its text becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string; blank is absent (`null` over a base), or `""` with [`Input::blank_empty`].
    Text,
    /// A multi-line string, like [`Kind::Text`].
    Area,
    /// A finite number.
    Number,
    /// A whole number ≥ 0.
    Whole,
    /// Any JSON value, in a text area.
    Json,
    /// A list of strings, typed on one line separated by commas (blank items left out).
    List,
    /// A checkbox: `true` when ticked.
    Check,
    /// One of the given values; `""` (when offered) is absent.
    Choice(&'static [&'static str]),
}

/// One input of a form.
#[derive(Debug, Clone)]
pub struct Input {
    /// The path of the request field it sets: `a.b`, `a[1].b`.
    pub path: String,
    pub label: String,
    pub kind: Kind,
    /// Its text, as shown (and as posted, when the form comes back with problems).
    pub text: String,
    pub hint: Option<&'static str>,
    /// Blank means empty (`""`, or `[]` for a list) rather than absent: a description can be
    /// emptied, a list cleared.
    pub blank_empty: bool,
}

impl Input {
    pub fn new(path: impl Into<String>, label: impl Into<String>, kind: Kind) -> Self {
        Self {
            path: path.into(),
            label: label.into(),
            kind,
            text: String::new(),
            hint: None,
            blank_empty: false,
        }
    }

    pub fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn blank_empty(mut self) -> Self {
        self.blank_empty = true;
        self
    }

    /// Its text from `doc`'s value at its path (blank where there is none).
    pub fn from(mut self, doc: &Value) -> Self {
        self.text = match (get(doc, &self.path), self.kind) {
            (None | Some(Value::Null), _) => String::new(),
            (Some(Value::String(s)), _) => s.clone(),
            (Some(Value::Bool(b)), Kind::Check) => if *b { "on" } else { "" }.to_owned(),
            (Some(v), Kind::Json) => serde_json::to_string_pretty(v).unwrap_or_default(),
            (Some(Value::Array(items)), Kind::List) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            (Some(v), _) => v.to_string(),
        };
        self
    }

    /// The HTML id of the input (and, suffixed, of its problems).
    pub fn id(&self) -> String {
        id_of(&self.path)
    }

    /// Its text as JSON: `Ok(None)` when blank (absent), `Err` with why it is not what its
    /// kind needs.
    fn value(&self) -> Result<Option<Value>, String> {
        let text = self.text.trim();
        if text.is_empty() && self.kind != Kind::Check {
            let empty = match self.kind {
                Kind::List => Value::Array(Vec::new()),
                _ => Value::String(String::new()),
            };
            return Ok(self.blank_empty.then_some(empty));
        }
        match self.kind {
            Kind::Text | Kind::Area => Ok(Some(Value::String(self.text.clone()))),
            Kind::Choice(options) => {
                if options.contains(&text) {
                    Ok(Some(Value::String(text.to_owned())))
                } else {
                    Err(format!("must be one of {}", options.join(", ")))
                }
            }
            Kind::Check => Ok(Some(Value::Bool(!text.is_empty()))),
            Kind::Number => text
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(|n| Some(Value::Number(n)))
                .ok_or_else(|| "must be a number".to_owned()),
            Kind::Whole => text
                .parse::<u64>()
                .map(|n| Some(Value::from(n)))
                .map_err(|_| "must be a whole number, 0 or more".to_owned()),
            Kind::Json => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| format!("is not valid JSON: {e}")),
            Kind::List => Ok(Some(Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            ))),
        }
    }
}

/// A form: its inputs and the problems found, by input path or for the whole form.
#[derive(Debug, Clone, Default)]
pub struct Form {
    pub inputs: Vec<Input>,
    problems: BTreeMap<String, Vec<String>>,
    general: Vec<String>,
    /// Every problem in words (`field: message`), in the order reported.
    pub listed: Vec<String>,
}

/// What a posted form's fields are, by name (a repeated name keeps its last value).
pub type Posted = HashMap<String, String>;

impl Form {
    pub fn new(inputs: Vec<Input>) -> Self {
        Self {
            inputs,
            ..Self::default()
        }
    }

    pub fn has_problems(&self) -> bool {
        !self.listed.is_empty()
    }

    /// Take the posted texts, and build the request over `base`: each input's value set at
    /// its path, a blank one left out (`None` base) or set to `null` (over a base, so that
    /// an edit can remove it). Problems of the texts themselves are recorded; the document
    /// is built from the rest.
    pub fn read(&mut self, posted: &Posted, base: Option<&Value>) -> Value {
        let mut doc = base.cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let mut problems = Vec::new();
        for input in &mut self.inputs {
            input.text = posted.get(&input.path).cloned().unwrap_or_default();
            match input.value() {
                Ok(Some(v)) => set(&mut doc, &input.path, v),
                Ok(None) if base.is_some() => set(&mut doc, &input.path, Value::Null),
                Ok(None) => {}
                Err(message) => problems.push((input.path.clone(), message)),
            }
        }
        for (path, message) in problems {
            self.place(&path, &message);
        }
        doc
    }

    /// Record a problem of `field` (a request path): next to its input, or the input of
    /// the nearest enclosing field (`targeting.rules[0]` goes to a `targeting` JSON input),
    /// else at the top of the form. It is listed at the top either way.
    pub fn place(&mut self, field: &str, message: &str) {
        self.listed.push(if field.is_empty() {
            message.to_owned()
        } else {
            format!("{field}: {message}")
        });
        let owner = self
            .inputs
            .iter()
            .filter(|i| encloses(&i.path, field))
            .max_by_key(|i| i.path.len());
        match owner {
            Some(i) => self
                .problems
                .entry(i.path.clone())
                .or_default()
                .push(message.to_owned()),
            None => self.general.push(message.to_owned()),
        }
    }

    /// The problems of a request that could not be read as its type (`serde_path_to_error`):
    /// a missing field is the problem of that field.
    pub fn place_unreadable(&mut self, path: &str, message: &str) {
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name);
        match missing {
            Some(name) if path.is_empty() || path == "." => self.place(name, "is required"),
            Some(name) => self.place(&format!("{path}.{name}"), "is required"),
            None => self.place(if path == "." { "" } else { path }, message),
        }
    }

    /// The application's problems (`details` of `field` and `message`), each placed.
    pub fn place_details(&mut self, details: &[Value]) {
        for d in details {
            let field = d.get("field").and_then(Value::as_str).unwrap_or("");
            let message = d
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            self.place(field, message);
        }
    }

    /// The inputs whose path starts with `prefix`, rendered.
    pub fn inputs_under(&self, prefix: &str) -> Markup {
        html! {
            @for input in self.inputs.iter().filter(|i| i.path.starts_with(prefix)) {
                (self.input(input))
            }
        }
    }

    /// The input at `path`, rendered (nothing when the form has none).
    pub fn field(&self, path: &str) -> Markup {
        html! {
            @if let Some(input) = self.inputs.iter().find(|i| i.path == path) {
                (self.input(input))
            }
        }
    }

    /// The form's own problems (those no input owns), and the count of all.
    pub fn summary(&self) -> Markup {
        html! {
            @if self.has_problems() {
                div.problem role="alert" #form-problems {
                    p { strong { "validation_failed" } ": "
                        (self.listed.len()) @if self.listed.len() == 1 { " problem" } @else { " problems" }
                        "; each is shown next to its field." }
                    ul {
                        @for p in &self.listed { li { (p) } }
                    }
                }
            }
        }
    }

    fn input(&self, i: &Input) -> Markup {
        let id = i.id();
        let problems = self.problems.get(&i.path);
        let error_id = format!("{id}-error");
        let described = problems.map(|_| error_id.as_str());
        let invalid = problems.map(|_| "true");
        html! {
            div.field data-field=(i.path) {
                @match i.kind {
                    Kind::Check => {
                        label.check for=(id) {
                            input #(id) type="checkbox" name=(i.path) checked[!i.text.trim().is_empty()]
                                aria-invalid=[invalid] aria-describedby=[described];
                            " " (i.label)
                        }
                    },
                    _ => {
                        label for=(id) { (i.label) }
                        @match i.kind {
                            Kind::Area | Kind::Json => {
                                textarea #(id) name=(i.path) rows=(if i.kind == Kind::Json { 4 } else { 2 })
                                    spellcheck="false" aria-invalid=[invalid] aria-describedby=[described] { (i.text) }
                            },
                            Kind::Choice(options) => {
                                select #(id) name=(i.path) aria-invalid=[invalid] aria-describedby=[described] {
                                    @for o in options {
                                        option value=(o) selected[*o == i.text.trim()] {
                                            @if o.is_empty() { "(default)" } @else { (o) }
                                        }
                                    }
                                }
                            },
                            Kind::Number => {
                                input #(id) type="number" step="any" name=(i.path) value=(i.text)
                                    aria-invalid=[invalid] aria-describedby=[described];
                            },
                            Kind::Whole => {
                                input #(id) type="number" min="0" step="1" name=(i.path) value=(i.text)
                                    aria-invalid=[invalid] aria-describedby=[described];
                            },
                            _ => {
                                input #(id) type="text" name=(i.path) value=(i.text)
                                    aria-invalid=[invalid] aria-describedby=[described];
                            },
                        }
                    },
                }
                @if let Some(hint) = i.hint { small.hint { (hint) } }
                @if let Some(problems) = problems {
                    p.field-error #(error_id) role="alert" {
                        @for (n, p) in problems.iter().enumerate() {
                            @if n > 0 { br; }
                            (p)
                        }
                    }
                }
            }
        }
    }
}

/// Whether the field at `path` is, or encloses, the field `field`.
fn encloses(path: &str, field: &str) -> bool {
    field
        .strip_prefix(path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// An HTML id for a field path: `variants[1].weight` → `f-variants-1-weight`.
pub fn id_of(path: &str) -> String {
    let mut id = String::from("f");
    for part in path.split(['.', '[', ']']).filter(|p| !p.is_empty()) {
        id.push('-');
        id.extend(
            part.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

/// A path's steps: a key or an index.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some((n, after)) = rest.split_once(']') {
            if let Ok(i) = n.parse() {
                out.push(Step::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    out
}

fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    steps(path).iter().try_fold(doc, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })
}

/// Set `value` at `path` in `doc`, making the objects and arrays on the way (an array
/// grows with `null`s to reach an index).
fn set(doc: &mut Value, path: &str, value: Value) {
    let mut at = doc;
    for step in steps(path) {
        at = match step {
            Step::Key(k) => {
                if !at.is_object() {
                    *at = Value::Object(Map::new());
                }
                match at {
                    Value::Object(m) => m.entry(k.to_owned()).or_insert(Value::Null),
                    _ => return,
                }
            }
            Step::Index(i) => {
                if !at.is_array() {
                    *at = Value::Array(Vec::new());
                }
                match at {
                    Value::Array(a) => {
                        if a.len() <= i {
                            a.resize(i + 1, Value::Null);
                        }
                        &mut a[i]
                    }
                    _ => return,
                }
            }
        };
    }
    *at = value;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn posted(pairs: &[(&str, &str)]) -> Posted {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn texts_become_json_at_their_paths() {
        let mut form = Form::new(vec![
            Input::new("key", "Key", Kind::Text),
            Input::new("variants[1].weight", "Weight", Kind::Number),
            Input::new("variants[1].config", "Config", Kind::Json),
            Input::new("variants[1].control", "Control", Kind::Check),
            Input::new("policy.min_assignments", "Min", Kind::Whole),
            Input::new("audience", "Audience", Kind::Text),
        ]);
        let doc = form.read(
            &posted(&[
                ("key", "checkout"),
                ("variants[1].weight", "0.25"),
                ("variants[1].config", r#"{"a": [1]}"#),
                ("policy.min_assignments", "100"),
                ("audience", " "),
            ]),
            None,
        );
        assert!(!form.has_problems(), "{:?}", form.listed);
        assert_eq!(
            doc,
            json!({
                "key": "checkout",
                "variants": [null, {"weight": 0.25, "config": {"a": [1]}, "control": false}],
                "policy": {"min_assignments": 100},
            })
        );
    }

    #[test]
    fn a_list_is_typed_on_one_line_and_shown_the_same_way() {
        let mut form = Form::new(vec![Input::new("types", "Types", Kind::List)]);
        let doc = form.read(&posted(&[("types", " a.b, ,c ,")]), None);
        assert_eq!(doc, json!({"types": ["a.b", "c"]}));
        let shown = Input::new("types", "Types", Kind::List).from(&doc);
        assert_eq!(shown.text, "a.b, c");
        let doc = form.read(&posted(&[("types", "  ")]), None);
        assert_eq!(doc, json!({}), "blank is absent");
    }

    #[test]
    fn a_blank_empty_input_is_its_kinds_empty_value() {
        let mut form = Form::new(vec![
            Input::new("types", "Types", Kind::List).blank_empty(),
            Input::new("note", "Note", Kind::Area).blank_empty(),
        ]);
        let doc = form.read(&posted(&[("types", " "), ("note", "")]), None);
        assert_eq!(doc, json!({"types": [], "note": ""}));
    }

    #[test]
    fn over_a_base_a_blank_input_removes_and_the_rest_is_kept() {
        let base = json!({"audience": "beta", "policy": {"alpha": 0.05, "override_variant": "b"}});
        let mut form = Form::new(vec![
            Input::new("audience", "Audience", Kind::Text),
            Input::new("policy.alpha", "Alpha", Kind::Number),
            Input::new("description", "Description", Kind::Area).blank_empty(),
        ]);
        let doc = form.read(&posted(&[("policy.alpha", "0.1")]), Some(&base));
        assert_eq!(
            doc,
            json!({"audience": null, "description": "", "policy": {"alpha": 0.1, "override_variant": "b"}})
        );
    }

    #[test]
    fn each_unreadable_text_is_a_problem_of_its_input() {
        let mut form = Form::new(vec![
            Input::new("w", "W", Kind::Number),
            Input::new("n", "N", Kind::Whole),
            Input::new("j", "J", Kind::Json),
            Input::new("c", "C", Kind::Choice(&["a", "b"])),
        ]);
        form.read(
            &posted(&[("w", "heavy"), ("n", "-1"), ("j", "{"), ("c", "z")]),
            None,
        );
        assert_eq!(form.listed.len(), 4, "{:?}", form.listed);
        for path in ["w", "n", "j", "c"] {
            assert_eq!(form.problems[path].len(), 1, "{path}");
        }
        let page = form.inputs_under("").into_string();
        assert!(page.contains(r#"id="f-w-error""#), "{page}");
        assert!(page.contains(r#"aria-describedby="f-w-error""#), "{page}");
    }

    #[test]
    fn problems_go_to_the_nearest_enclosing_input_else_to_the_top() {
        let mut form = Form::new(vec![
            Input::new("targeting", "Targeting", Kind::Json),
            Input::new("variants[1].weight", "Weight", Kind::Number),
            Input::new("primary_metric.event", "Event", Kind::Text),
        ]);
        form.place("targeting.rules[0].op", "unknown operator");
        form.place("variants[1].weight", "must be between 0 and 1");
        form.place("variants", "weights must sum to 1");
        form.place_unreadable("primary_metric", "missing field `event`");
        form.place("variants[10].weight", "not this one");
        assert_eq!(form.problems["targeting"], ["unknown operator"]);
        assert_eq!(
            form.problems["variants[1].weight"],
            ["must be between 0 and 1"]
        );
        assert_eq!(form.problems["primary_metric.event"], ["is required"]);
        assert_eq!(form.general, ["weights must sum to 1", "not this one"]);
        assert_eq!(form.listed.len(), 5);
    }

    #[test]
    fn inputs_show_the_base_document() {
        let doc =
            json!({"policy": {"alpha": 0.05, "peeking_guard": true}, "targeting": {"rules": []}});
        let alpha = Input::new("policy.alpha", "Alpha", Kind::Number).from(&doc);
        let guard = Input::new("policy.peeking_guard", "Guard", Kind::Check).from(&doc);
        let targeting = Input::new("targeting", "Targeting", Kind::Json).from(&doc);
        let missing = Input::new("audience", "Audience", Kind::Text).from(&doc);
        assert_eq!(alpha.text, "0.05");
        assert_eq!(guard.text, "on");
        assert_eq!(targeting.text, "{\n  \"rules\": []\n}");
        assert_eq!(missing.text, "");
        assert_eq!(id_of("variants[1].weight"), "f-variants-1-weight");
    }
}
