//! The deployment templates set exactly the environment variables the binary
//! reads: `template.yaml` (SAM) and the CDK construct
//! (`infra/cdk/lib/outbox-relay.ts`) against [`outbox_lambda::all_variables()`],
//! less the two local-only endpoint overrides, which neither may mention,
//! and nothing else.
//!
//! Both files are scanned as text (no YAML or TypeScript parser): in SAM, the
//! `Environment: Variables:` block of the resource `RelayFunction` (which must
//! be the `AWS::Serverless::Function`), by indentation; in CDK, the
//! `environment: { ... }` literal of the one `new lambda.Function(` in the
//! `OutboxRelay` class, by braces. Other functions (the example consumer's)
//! are not the relay's and are not read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use outbox_lambda::all_variables;

fn repo_file(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (path, text)
}

fn expected() -> BTreeSet<String> {
    all_variables().iter().map(|name| (*name).to_owned()).collect()
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The lines of the block under the first line at or after `from` whose
/// trimmed text starts with `key` (e.g. `Variables:`): the following lines
/// indented deeper than it, up to the first one that is not. Returns the
/// block's index range.
fn yaml_block(lines: &[&str], from: usize, key: &str) -> Option<(usize, usize)> {
    let head = (from..lines.len()).find(|&i| lines[i].trim_start().starts_with(key))?;
    let base = indent(lines[head]);
    let end = (head + 1..lines.len())
        .find(|&i| !is_blank_or_comment(lines[i]) && indent(lines[i]) <= base)
        .unwrap_or(lines.len());
    Some((head + 1, end))
}

/// The logical id of the relay function in `template.yaml`.
const SAM_RELAY_FUNCTION: &str = "RelayFunction";

/// The class of the CDK construct that creates the relay function.
const CDK_RELAY_CLASS: &str = "export class OutboxRelay extends Construct";

/// The lines of the (single) resource of type `resource_type`, from its
/// `Type:` line to the end of the resource.
fn sam_resource<'a>(lines: &'a [&'a str], resource_type: &str) -> &'a [&'a str] {
    let type_line = format!("Type: {resource_type}");
    let found: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim() == type_line)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {resource_type}");
    let start = found[0];
    let end = (start + 1..lines.len())
        .find(|&i| !is_blank_or_comment(lines[i]) && indent(lines[i]) < indent(lines[start]))
        .unwrap_or(lines.len());
    &lines[start..end]
}

/// The lines of the resource whose logical id is `logical_id` (its key under
/// the top-level `Resources:`), which must be of type `resource_type`: from
/// its key to the end of the resource.
fn sam_resource_by_id<'a>(lines: &'a [&'a str], logical_id: &str, resource_type: &str) -> &'a [&'a str] {
    let resources = (0..lines.len())
        .find(|&i| lines[i].trim_end() == "Resources:")
        .unwrap_or_else(|| panic!("the template has no top-level Resources:"));
    let section_end = (resources + 1..lines.len())
        .find(|&i| !is_blank_or_comment(lines[i]) && indent(lines[i]) == 0)
        .unwrap_or(lines.len());
    let section = &lines[resources + 1..section_end];
    let Some(id_indent) = section
        .iter()
        .find(|l| !is_blank_or_comment(l))
        .map(|l| indent(l))
    else {
        panic!("Resources: is empty");
    };
    let key = format!("{logical_id}:");
    let found: Vec<usize> = (0..section.len())
        .filter(|&i| indent(section[i]) == id_indent && section[i].trim() == key)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one resource {logical_id}");
    let start = found[0];
    let end = (start + 1..section.len())
        .find(|&i| !is_blank_or_comment(section[i]) && indent(section[i]) <= id_indent)
        .unwrap_or(section.len());
    let resource = &section[start..end];
    let type_line = format!("Type: {resource_type}");
    let property_indent = resource[1..]
        .iter()
        .find(|l| !is_blank_or_comment(l))
        .map(|l| indent(l));
    assert!(
        resource[1..]
            .iter()
            .any(|l| Some(indent(l)) == property_indent && l.trim() == type_line),
        "resource {logical_id} is not of type {resource_type}"
    );
    resource
}

/// The variables set on the relay function (`RelayFunction`, an
/// `AWS::Serverless::Function`) of a SAM template.
fn sam_function_variables(template: &str) -> BTreeSet<String> {
    let all: Vec<&str> = template.lines().collect();
    let lines = sam_resource_by_id(&all, SAM_RELAY_FUNCTION, "AWS::Serverless::Function");
    let (env_start, env_end) =
        yaml_block(lines, 0, "Environment:").unwrap_or_else(|| panic!("the function has no Environment"));
    let (start, end) = yaml_block(&lines[..env_end], env_start, "Variables:")
        .unwrap_or_else(|| panic!("the function's Environment has no Variables"));
    let body: Vec<&str> = lines[start..end]
        .iter()
        .copied()
        .filter(|l| !is_blank_or_comment(l))
        .collect();
    let Some(key_indent) = body.first().map(|l| indent(l)) else {
        return BTreeSet::new();
    };
    body.iter()
        .filter(|l| indent(l) == key_indent)
        .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

/// The index of the `}` closing the `{` at `open`, skipping comments and
/// string literals (`'...'`, `"..."`, template literals).
fn closing_brace(source: &str, open: usize) -> Option<usize> {
    let bytes = source.as_bytes();
    assert_eq!(bytes.get(open), Some(&b'{'), "not an opening brace");
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = source[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = source[i + 2..].find("*/").map_or(bytes.len(), |n| i + 2 + n + 1);
            }
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The text between the braces of the first `{` at or after `from`.
fn braced(source: &str, from: usize, what: &str) -> (usize, usize) {
    let open = source[from..]
        .find('{')
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("no `{{` after {what}"));
    let close = closing_brace(source, open).unwrap_or_else(|| panic!("unclosed `{{` of {what}"));
    (open + 1, close)
}

/// The keys of the `environment: { ... }` literal of the relay function: the
/// one `new lambda.Function(` in the body of the `OutboxRelay` class of the
/// CDK construct.
fn cdk_function_variables(source: &str) -> BTreeSet<String> {
    let classes: Vec<usize> = source.match_indices(CDK_RELAY_CLASS).map(|(i, _)| i).collect();
    assert_eq!(classes.len(), 1, "expected exactly one `{CDK_RELAY_CLASS}`");
    let (class_start, class_end) = braced(source, classes[0], CDK_RELAY_CLASS);
    let class = &source[class_start..class_end];
    let functions: Vec<usize> = class
        .match_indices("new lambda.Function(")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        functions.len(),
        1,
        "expected exactly one `new lambda.Function(` in the OutboxRelay class"
    );
    let (props_start, props_end) = braced(class, functions[0], "the relay function's props");
    let props = &class[props_start..props_end];
    let opens: Vec<usize> = props.match_indices("environment: {").map(|(i, _)| i).collect();
    assert_eq!(
        opens.len(),
        1,
        "expected exactly one `environment: {{` in the relay function's props"
    );
    let (body_start, body_end) = braced(props, opens[0], "`environment: {`");
    let body = &props[body_start..body_end];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

/// The `OUTBOX_*` names among a function's variables.
fn outbox_names(variables: &BTreeSet<String>) -> BTreeSet<String> {
    variables
        .iter()
        .filter(|k| k.starts_with("OUTBOX_"))
        .cloned()
        .collect()
}

fn assert_same_names(what: &Path, found: &BTreeSet<String>) {
    let expected = expected();
    let missing: Vec<_> = expected.difference(found).collect();
    let unknown: Vec<_> = found.difference(&expected).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{}: the function's OUTBOX_* variables differ from outbox_lambda::all_variables(): \
         missing {missing:?}, not read by the binary {unknown:?}",
        what.display()
    );
}

#[test]
fn sam_template_sets_exactly_the_variables_the_binary_reads() {
    let (path, text) = repo_file("template.yaml");
    assert_same_names(&path, &outbox_names(&sam_function_variables(&text)));
}

#[test]
fn cdk_construct_sets_exactly_the_variables_the_binary_reads() {
    let (path, text) = repo_file("infra/cdk/lib/outbox-relay.ts");
    assert_same_names(&path, &outbox_names(&cdk_function_variables(&text)));
}

#[test]
fn neither_template_sets_a_variable_the_binary_does_not_read() {
    for (file, read) in [
        (
            "template.yaml",
            sam_function_variables as fn(&str) -> BTreeSet<String>,
        ),
        ("infra/cdk/lib/outbox-relay.ts", cdk_function_variables),
    ] {
        let variables = read(&repo_file(file).1);
        let others: Vec<_> = variables.iter().filter(|k| !k.starts_with("OUTBOX_")).collect();
        assert!(
            others.is_empty(),
            "{file}: variables the binary does not read: {others:?}"
        );
    }
}

#[test]
fn neither_template_overrides_the_aws_endpoints() {
    for file in ["template.yaml", "infra/cdk/lib/outbox-relay.ts"] {
        let (path, text) = repo_file(file);
        assert!(
            !text.contains("AWS_ENDPOINT_URL"),
            "{} sets an endpoint variable; deployed functions use the regional endpoints",
            path.display()
        );
    }
}

#[test]
fn both_mappings_report_batch_item_failures() {
    let (path, text) = repo_file("template.yaml");
    let all: Vec<&str> = text.lines().collect();
    let lines = sam_resource(&all, "AWS::Lambda::EventSourceMapping");
    let (start, end) = yaml_block(lines, 0, "FunctionResponseTypes:")
        .unwrap_or_else(|| panic!("{}: the mapping has no FunctionResponseTypes", path.display()));
    assert!(
        lines[start..end]
            .iter()
            .any(|l| l.trim() == "- ReportBatchItemFailures"),
        "{}: FunctionResponseTypes lacks ReportBatchItemFailures",
        path.display()
    );
    let (path, text) = repo_file("infra/cdk/lib/outbox-relay.ts");
    assert!(
        text.contains("reportBatchItemFailures: true,"),
        "{}: the mapping does not set reportBatchItemFailures",
        path.display()
    );
}

#[test]
fn the_scanners_read_only_the_function_block() {
    let template = "\
Resources:
  ConsumerFunction:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          OUTBOX_CONSUMER: x
  RelayFunction:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          # a comment
          OUTBOX_A: !Ref A

          OUTBOX_B: !If [C, x, y]
          OUTBOX_C:
            Fn::Sub: '${X}'
      Timeout: 3
  Other:
    Type: AWS::Lambda::Function
    Properties:
      Environment:
        Variables:
          OUTBOX_OTHER: x
Outputs:
  RelayFunction:
    Value: !Ref RelayFunction
";
    let names: Vec<String> = sam_function_variables(template).into_iter().collect();
    assert_eq!(names, ["OUTBOX_A", "OUTBOX_B", "OUTBOX_C"]);

    let construct = "export class Consumer extends Construct {
  constructor() {
    new lambda.Function(this, 'F', { environment: { OUTBOX_CONSUMER: 'x' } });
  }
}
export class OutboxRelay extends Construct {
  constructor() {
    // a comment with a brace: {
    const message = '} and `{`';
    this.function = new lambda.Function(this, 'F', {
      environment: {
        // OUTBOX_COMMENTED: no
        OUTBOX_A: this.bus.name,
        OUTBOX_B: String({ a: 1 }.a),
      },
      other: { OUTBOX_OUTSIDE: 'x' },
    });
    new Consumer();
  }
}
export class After extends Construct {
  environment: { OUTBOX_AFTER: 'x' };
}";
    let names: Vec<String> = cdk_function_variables(construct).into_iter().collect();
    assert_eq!(names, ["OUTBOX_A", "OUTBOX_B"]);
}

#[test]
fn the_scanners_refuse_what_they_cannot_pin_down() {
    let not_a_serverless_function = "\
Resources:
  RelayFunction:
    Type: AWS::Lambda::Function
    Properties:
      Environment:
        Variables:
          OUTBOX_A: x
";
    assert!(std::panic::catch_unwind(|| sam_function_variables(not_a_serverless_function)).is_err());
    let no_relay = "\
Resources:
  OtherFunction:
    Type: AWS::Serverless::Function
";
    assert!(std::panic::catch_unwind(|| sam_function_variables(no_relay)).is_err());
    let two_functions = "export class OutboxRelay extends Construct {
  a = new lambda.Function(this, 'A', { environment: { OUTBOX_A: 'x' } });
  b = new lambda.Function(this, 'B', { environment: { OUTBOX_B: 'x' } });
}";
    assert!(std::panic::catch_unwind(|| cdk_function_variables(two_functions)).is_err());
}
