//! The deployment templates set exactly the environment variables the binary
//! reads: `template.yaml` (SAM) and the CDK construct
//! (`infra/cdk/lib/outbox-relay.ts`) against [`outbox_lambda::ALL_VARIABLES`],
//! less the two local-only endpoint overrides, which neither may mention.
//!
//! Both files are scanned as text (no YAML or TypeScript parser): the SAM
//! function's `Environment: Variables:` block by indentation, the construct's
//! `environment: { ... }` literal by braces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use outbox_lambda::{ALL_VARIABLES, ENV_EVENTBRIDGE_ENDPOINT, ENV_SQS_ENDPOINT};

/// Only for running the binary against local emulators.
const LOCAL_ONLY: [&str; 2] = [ENV_EVENTBRIDGE_ENDPOINT, ENV_SQS_ENDPOINT];

fn repo_file(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (path, text)
}

fn expected() -> BTreeSet<String> {
    ALL_VARIABLES
        .iter()
        .filter(|name| !LOCAL_ONLY.contains(name))
        .map(|name| (*name).to_owned())
        .collect()
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

/// The `OUTBOX_*` keys set on the (single) `AWS::Serverless::Function` of a
/// SAM template.
fn sam_function_variables(template: &str) -> BTreeSet<String> {
    let all: Vec<&str> = template.lines().collect();
    let lines = sam_resource(&all, "AWS::Serverless::Function");
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
        .filter(|k| k.starts_with("OUTBOX_"))
        .collect()
}

/// The `OUTBOX_*` keys of the (single) `environment: { ... }` literal of the
/// CDK construct.
fn cdk_function_variables(source: &str) -> BTreeSet<String> {
    let opens: Vec<usize> = source.match_indices("environment: {").map(|(i, _)| i).collect();
    assert_eq!(
        opens.len(),
        1,
        "expected exactly one `environment: {{` in the construct"
    );
    let body_start = opens[0] + "environment: {".len();
    let mut depth = 1usize;
    let mut body_end = None;
    for (i, c) in source[body_start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    body_end = Some(body_start + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let body = &source[body_start..body_end.unwrap_or_else(|| panic!("unclosed `environment: {{`"))];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| k.starts_with("OUTBOX_"))
        .collect()
}

fn assert_same_names(what: &Path, found: &BTreeSet<String>) {
    let expected = expected();
    let missing: Vec<_> = expected.difference(found).collect();
    let unknown: Vec<_> = found.difference(&expected).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{}: the function's OUTBOX_* variables differ from outbox_lambda::ALL_VARIABLES \
         (less {LOCAL_ONLY:?}): missing {missing:?}, not read by the binary {unknown:?}",
        what.display()
    );
}

#[test]
fn sam_template_sets_exactly_the_variables_the_binary_reads() {
    let (path, text) = repo_file("template.yaml");
    assert_same_names(&path, &sam_function_variables(&text));
}

#[test]
fn cdk_construct_sets_exactly_the_variables_the_binary_reads() {
    let (path, text) = repo_file("infra/cdk/lib/outbox-relay.ts");
    assert_same_names(&path, &cdk_function_variables(&text));
}

#[test]
fn neither_template_mentions_the_local_endpoint_overrides() {
    for file in ["template.yaml", "infra/cdk/lib/outbox-relay.ts"] {
        let (path, text) = repo_file(file);
        for name in LOCAL_ONLY {
            assert!(!text.contains(name), "{} mentions {name}", path.display());
        }
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
  Fn:
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
";
    let names: Vec<String> = sam_function_variables(template).into_iter().collect();
    assert_eq!(names, ["OUTBOX_A", "OUTBOX_B", "OUTBOX_C"]);

    let construct = "new Function(this, 'F', {
      environment: {
        // OUTBOX_COMMENTED: no
        OUTBOX_A: this.bus.name,
        OUTBOX_B: String({ a: 1 }.a),
      },
      other: { OUTBOX_OUTSIDE: 'x' },
    });";
    let names: Vec<String> = cdk_function_variables(construct).into_iter().collect();
    assert_eq!(names, ["OUTBOX_A", "OUTBOX_B"]);
}
