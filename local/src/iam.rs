//! The programs' IAM identities in moto, made from template.yaml's role policies.
//!
//! In AWS each process runs with its role: the trigger with `TriggerRole`, each worker task with
//! `WorkerTaskRole` (and the `WorkerInputAccess` policy attached to it), `worker serve` with
//! `OnlineTaskRole`. Locally each gets an IAM user in moto whose inline policies are those role
//! policies, read from template.yaml with the local stack's names and ARNs in place of the
//! template's references; moto (started with IAM enforced, see [`crate::moto`]) then refuses
//! whatever the template does not grant. The policies are never copied by hand, so a permission
//! the template lacks fails a local run or a test, not a user's first deploy.
//!
//! [`granted_actions`] lists every action the template grants each program (all branches of its
//! conditions), and [`coverage`] compares that with the actions moto saw each user use.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use saphyr::{LoadableYamlNode, Yaml};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A program that runs with a role of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Program {
    Trigger,
    Worker,
    Online,
}

impl Program {
    pub const ALL: [Program; 3] = [Program::Trigger, Program::Worker, Program::Online];

    /// The role's logical id in template.yaml.
    pub fn role(self) -> &'static str {
        match self {
            Program::Trigger => "TriggerRole",
            Program::Worker => "WorkerTaskRole",
            Program::Online => "OnlineTaskRole",
        }
    }

    /// The IAM user that stands for the role in moto.
    pub fn user(self) -> &'static str {
        match self {
            Program::Trigger => "sluice-trigger",
            Program::Worker => "sluice-worker",
            Program::Online => "sluice-online",
        }
    }

    /// The role's ARN in the local stack (the worker's task definition names it as its task role).
    pub fn role_arn(self) -> String {
        format!("arn:aws:iam::{}:role/{}", crate::aws::ACCOUNT_ID, self.user())
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.role())
    }
}

/// An IAM user's access key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of debug output and so out of logs.
        f.debug_struct("AccessKey").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl AccessKey {
    /// The administrator's key, which moto's launcher creates (`local/moto/server.py`).
    pub fn admin() -> Self {
        Self {
            access_key_id: crate::aws::ACCESS_KEY_ID.to_owned(),
            secret_access_key: crate::aws::SECRET_ACCESS_KEY.to_owned(),
        }
    }
}

/// What the template's references stand for in the local stack: `!Ref NAME` and `${NAME}` by
/// name, `!GetAtt NAME.Attr` and `${NAME.Attr}` by `NAME.Attr`, and the conditions' values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Substitutions {
    pub values: BTreeMap<String, String>,
    pub conditions: BTreeMap<String, bool>,
}

impl Substitutions {
    pub fn value(mut self, name: &str, value: impl Into<String>) -> Self {
        self.values.insert(name.to_owned(), value.into());
        self
    }

    pub fn condition(mut self, name: &str, holds: bool) -> Self {
        self.conditions.insert(name.to_owned(), holds);
        self
    }
}

/// A statement to leave out of a program's policies (by its `Sid`), to show what the program
/// does without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub program: Program,
    pub sid: String,
}

/// template.yaml, parsed once.
pub struct Template {
    root: Yaml<'static>,
}

impl Template {
    /// Reads and parses the repository's template.yaml.
    pub fn load() -> Result<Self> {
        Self::from_file(&crate::repo::in_repo("template.yaml"))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(text)
    }

    pub fn parse(text: String) -> Result<Self> {
        // The parsed nodes borrow the text; the template lives as long as the process needs it.
        let text: &'static str = Box::leak(text.into_boxed_str());
        let root = Yaml::load_from_str(text)
            .context("template.yaml is not YAML")?
            .into_iter()
            .next()
            .context("template.yaml is empty")?;
        Ok(Self { root })
    }

    fn resources(&self) -> Result<&saphyr::Mapping<'static>> {
        self.root.as_mapping_get("Resources").and_then(Yaml::as_mapping).context("template.yaml has no Resources")
    }

    /// The policy documents of `program`'s role: the role's inline policies and every
    /// `AWS::IAM::RolePolicy` or `AWS::IAM::Policy` attached to it, references substituted,
    /// `revoked` statements left out. Named `<resource>.<policy name>`.
    pub fn policies(
        &self,
        program: Program,
        substitutions: &Substitutions,
        revoked: &[Revoked],
    ) -> Result<BTreeMap<String, Value>> {
        let mut documents = BTreeMap::new();
        for (logical_id, name, document) in self.policy_nodes(program)? {
            let mut resolved = resolve(document, substitutions)
                .with_context(|| format!("in the policy {name} of {logical_id}"))?
                .with_context(|| format!("the policy {name} of {logical_id} is empty"))?;
            if let Some(statements) = resolved.get_mut("Statement").and_then(Value::as_array_mut) {
                statements.retain(|statement| {
                    !revoked.iter().any(|r| r.program == program && statement["Sid"] == r.sid.as_str())
                });
            }
            documents.insert(format!("{logical_id}.{name}"), resolved);
        }
        if documents.is_empty() {
            bail!("template.yaml gives {} no policy", program.role());
        }
        Ok(documents)
    }

    /// (resource, policy name, PolicyDocument node) of every policy of `program`'s role.
    fn policy_nodes(&self, program: Program) -> Result<Vec<(String, String, &Yaml<'static>)>> {
        let resources = self.resources()?;
        let role = resources
            .iter()
            .find(|(id, _)| id.as_str() == Some(program.role()))
            .map(|(_, node)| node)
            .with_context(|| format!("template.yaml has no resource {}", program.role()))?;
        let mut nodes = Vec::new();
        for policy in role
            .as_mapping_get("Properties")
            .and_then(|p| p.as_mapping_get("Policies"))
            .and_then(Yaml::as_vec)
            .into_iter()
            .flatten()
        {
            let name = policy.as_mapping_get("PolicyName").and_then(Yaml::as_str).unwrap_or("?").to_owned();
            let document = policy.as_mapping_get("PolicyDocument").context("a policy without PolicyDocument")?;
            nodes.push((program.role().to_owned(), name, document));
        }
        for (id, resource) in resources.iter() {
            let kind = resource.as_mapping_get("Type").and_then(Yaml::as_str);
            if !matches!(kind, Some("AWS::IAM::RolePolicy" | "AWS::IAM::Policy")) {
                continue;
            }
            let Some(properties) = resource.as_mapping_get("Properties") else { continue };
            let roles: Vec<&Yaml<'static>> =
                match (properties.as_mapping_get("RoleName"), properties.as_mapping_get("Roles")) {
                    (Some(role), _) => vec![role],
                    (None, Some(roles)) => roles.as_vec().map(|v| v.iter().collect()).unwrap_or_default(),
                    (None, None) => Vec::new(),
                };
            if roles.iter().any(|r| reference(r) == Some(program.role())) {
                let name = properties.as_mapping_get("PolicyName").and_then(Yaml::as_str).unwrap_or("?").to_owned();
                let document =
                    properties.as_mapping_get("PolicyDocument").context("a policy without PolicyDocument")?;
                nodes.push((id.as_str().unwrap_or("?").to_owned(), name, document));
            }
        }
        Ok(nodes)
    }
}

/// The resource a `!Ref` names.
fn reference<'a>(node: &'a Yaml<'_>) -> Option<&'a str> {
    match node {
        Yaml::Tagged(tag, inner) if tag.suffix == "Ref" => inner.as_str(),
        _ => None,
    }
}

/// `node` as JSON with CloudFormation's intrinsic functions evaluated; `None` for
/// `!Ref AWS::NoValue` (the property is left out).
fn resolve(node: &Yaml<'_>, substitutions: &Substitutions) -> Result<Option<Value>> {
    Ok(Some(match node {
        Yaml::Tagged(tag, inner) => match tag.suffix.as_str() {
            "Ref" => {
                let name = inner.as_str().context("!Ref of something other than a name")?;
                if name == "AWS::NoValue" {
                    return Ok(None);
                }
                Value::String(lookup(substitutions, name)?)
            }
            "GetAtt" => {
                let name = match inner.as_ref() {
                    Yaml::Sequence(parts) => parts.iter().filter_map(Yaml::as_str).collect::<Vec<_>>().join("."),
                    other => other.as_str().context("!GetAtt of something other than a name")?.to_owned(),
                };
                Value::String(lookup(substitutions, &name)?)
            }
            "Sub" => {
                let text = inner.as_str().context("!Sub with variables of its own is not supported here")?;
                Value::String(substitute(text, substitutions)?)
            }
            "If" => {
                let branches = inner.as_vec().filter(|b| b.len() == 3).context("!If needs [condition, then, else]")?;
                let condition = branches[0].as_str().context("!If's condition is not a name")?;
                let holds = *substitutions
                    .conditions
                    .get(condition)
                    .with_context(|| format!("the local stack does not say whether the condition {condition} holds"))?;
                return resolve(&branches[if holds { 1 } else { 2 }], substitutions);
            }
            other => bail!("the intrinsic function !{other} is not supported in role policies here"),
        },
        Yaml::Mapping(map) => {
            let mut object = serde_json::Map::new();
            for (key, value) in map.iter() {
                let key = key.as_str().context("a mapping key that is not a string")?;
                if let Some(value) = resolve(value, substitutions)? {
                    object.insert(key.to_owned(), value);
                }
            }
            Value::Object(object)
        }
        Yaml::Sequence(items) => {
            let mut array = Vec::with_capacity(items.len());
            for item in items {
                if let Some(value) = resolve(item, substitutions)? {
                    array.push(value);
                }
            }
            Value::Array(array)
        }
        Yaml::Value(scalar) => match scalar {
            saphyr::Scalar::String(text) => Value::String(text.to_string()),
            saphyr::Scalar::Boolean(b) => Value::Bool(*b),
            saphyr::Scalar::Integer(i) => Value::from(*i),
            saphyr::Scalar::FloatingPoint(f) => Value::from(f.into_inner()),
            saphyr::Scalar::Null => Value::Null,
        },
        other => bail!("unexpected YAML node {other:?}"),
    }))
}

fn lookup(substitutions: &Substitutions, name: &str) -> Result<String> {
    substitutions
        .values
        .get(name)
        .cloned()
        .with_context(|| format!("the local stack has no value for the template's {name}"))
}

/// `text` with each `${NAME}` replaced (`${!NAME}` is a literal `${NAME}`, as in CloudFormation).
fn substitute(text: &str, substitutions: &Substitutions) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').with_context(|| format!("an unclosed ${{ in {text:?}"))?;
        let name = &after[..end];
        match name.strip_prefix('!') {
            Some(literal) => {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            }
            None => out.push_str(&lookup(substitutions, name)?),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every action the template grants `program`, whichever way its conditions go.
pub fn granted_actions(template: &Template, program: Program) -> Result<BTreeSet<String>> {
    let mut actions = BTreeSet::new();
    for (_, _, document) in template.policy_nodes(program)? {
        collect_actions(document, &mut actions);
    }
    Ok(actions)
}

fn collect_actions(node: &Yaml<'_>, actions: &mut BTreeSet<String>) {
    match node {
        Yaml::Mapping(map) => {
            for (key, value) in map.iter() {
                if key.as_str() == Some("Action") {
                    match value {
                        Yaml::Sequence(items) => {
                            actions.extend(items.iter().filter_map(Yaml::as_str).map(str::to_owned))
                        }
                        other => actions.extend(other.as_str().map(str::to_owned)),
                    }
                } else {
                    collect_actions(value, actions);
                }
            }
        }
        Yaml::Sequence(items) => items.iter().for_each(|item| collect_actions(item, actions)),
        Yaml::Tagged(_, inner) => collect_actions(inner, actions),
        _ => {}
    }
}

/// Creates each program's IAM user in moto at `endpoint` with `policies` and returns their keys
/// (`local/moto/users.py`, one process for all of them).
pub async fn create_users(
    endpoint: &str,
    policies: &BTreeMap<Program, BTreeMap<String, Value>>,
) -> Result<BTreeMap<Program, AccessKey>> {
    let users: Vec<Value> = policies
        .iter()
        .map(|(program, documents)| serde_json::json!({ "name": program.user(), "policies": documents }))
        .collect();
    let spec = serde_json::json!({ "endpoint": endpoint, "users": users }).to_string();
    let python = crate::repo::venv_tool("python")?;
    let script = crate::repo::in_repo("local/moto/users.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(spec.as_bytes()).await.context("cannot write the users' policies")?;
    drop(stdin);
    let output = child.wait_with_output().await.context("cannot wait for the IAM users' creation")?;
    if !output.status.success() {
        bail!(
            "creating the programs' IAM users in moto failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut by_user: BTreeMap<String, AccessKey> =
        serde_json::from_slice(&output.stdout).context("the IAM users' keys are not JSON")?;
    policies
        .keys()
        .map(|program| {
            let key = by_user.remove(program.user()).with_context(|| format!("no key for {}", program.user()))?;
            Ok((*program, key))
        })
        .collect()
}

/// One IAM decision moto made (a line of its audit file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Decision {
    pub user: String,
    pub action: String,
    pub resource: String,
    pub allowed: bool,
}

/// Reads every audit file in `dir` (see [`crate::moto::IAM_AUDIT_DIR`]).
pub fn read_decisions(dir: &Path) -> Result<Vec<Decision>> {
    let mut decisions = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                decisions
                    .push(serde_json::from_str(line).with_context(|| format!("a bad line in {}", path.display()))?);
            }
        }
    }
    Ok(decisions)
}

/// Actions the template grants that no local run can use, and why. Everything else a role is
/// granted must be used by some test (see [`coverage`]).
pub const NOT_EXERCISED_LOCALLY: &[(Program, &str, &str)] = &[
    (
        Program::Trigger,
        "logs:CreateLogStream",
        "Lambda writes the function's logs with the role, not the function's code",
    ),
    (Program::Trigger, "logs:PutLogEvents", "Lambda writes the function's logs with the role, not the function's code"),
    (Program::Trigger, "iam:PassRole", "ECS checks it on RunTask for the task's roles; moto does not"),
    (Program::Worker, "kms:Decrypt", "S3 calls KMS for the worker with SSE-KMS (KmsKeyArn), which moto's S3 does not"),
    (
        Program::Worker,
        "kms:GenerateDataKey",
        "S3 calls KMS for the worker with SSE-KMS (KmsKeyArn), which moto's S3 does not",
    ),
    (Program::Online, "kms:Decrypt", "S3 calls KMS for the server with SSE-KMS (KmsKeyArn), which moto's S3 does not"),
];

/// One line of the coverage check: an action a role is granted, and how often its user used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub program: Program,
    pub action: String,
    pub used: usize,
    /// Why no local run uses it, when that is known and accepted.
    pub not_exercised: Option<&'static str>,
}

/// Each granted action of each program with the number of allowed requests its user made with it.
pub fn coverage(template: &Template, decisions: &[Decision]) -> Result<Vec<Grant>> {
    let mut grants = Vec::new();
    for program in Program::ALL {
        for action in granted_actions(template, program)? {
            let used = decisions.iter().filter(|d| d.allowed && d.user == program.user() && d.action == action).count();
            let not_exercised =
                NOT_EXERCISED_LOCALLY.iter().find(|(p, a, _)| *p == program && *a == action).map(|(_, _, why)| *why);
            grants.push(Grant { program, action, used, not_exercised });
        }
    }
    Ok(grants)
}

/// The coverage check's verdict: an error naming every granted action no test used (with no
/// reason on record), and every reason on record for an action the template no longer grants.
pub fn check_coverage(grants: &[Grant]) -> Result<()> {
    let stale: Vec<String> = NOT_EXERCISED_LOCALLY
        .iter()
        .filter(|(program, action, _)| !grants.iter().any(|g| g.program == *program && g.action == *action))
        .map(|(program, action, _)| format!("{program} {action}"))
        .collect();
    if !stale.is_empty() {
        bail!("iam::NOT_EXERCISED_LOCALLY gives reasons for what template.yaml no longer grants: {}", stale.join(", "));
    }
    let unused: Vec<String> = grants
        .iter()
        .filter(|g| g.used == 0 && g.not_exercised.is_none())
        .map(|g| format!("{} {}", g.program, g.action))
        .collect();
    if !unused.is_empty() {
        bail!(
            "template.yaml grants what no test used: {} (a test that needs each, a reason in \
             iam::NOT_EXERCISED_LOCALLY, or take it away)",
            unused.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn substitutions() -> Substitutions {
        Substitutions::default()
            .value("AWS::Region", "us-east-1")
            .value("Queue.Arn", "arn:aws:sqs:us-east-1:123456789012:jobs")
            .value("Bucket", "models")
            .condition("Yes", true)
    }

    fn yaml(text: &str) -> Yaml<'static> {
        let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
        Yaml::load_from_str(text).unwrap().into_iter().next().unwrap()
    }

    #[test]
    fn intrinsic_functions_resolve_to_the_local_names() {
        let node = yaml(
            "Statement:\n\
             - Sid: A\n  Action: [sqs:SendMessage]\n  Resource: !GetAtt Queue.Arn\n\
             - !If [Yes, {Sid: B, Resource: !Sub 'arn:aws:s3:::${Bucket}/${!literal}*'}, !Ref AWS::NoValue]\n\
             - !If [Yes, !Ref AWS::NoValue, {Sid: C}]\n",
        );
        let resolved = resolve(&node, &substitutions()).unwrap().unwrap();
        assert_eq!(
            resolved,
            serde_json::json!({"Statement": [
                {"Sid": "A", "Action": ["sqs:SendMessage"], "Resource": "arn:aws:sqs:us-east-1:123456789012:jobs"},
                {"Sid": "B", "Resource": "arn:aws:s3:::models/${literal}*"},
            ]})
        );
    }

    #[test]
    fn an_unknown_reference_or_condition_is_an_error_naming_it() {
        let err = resolve(&yaml("!Sub '${Nope}'"), &substitutions()).unwrap_err();
        assert!(format!("{err:#}").contains("Nope"), "{err:#}");
        let err = resolve(&yaml("!If [Maybe, a, b]"), &substitutions()).unwrap_err();
        assert!(format!("{err:#}").contains("Maybe"), "{err:#}");
    }

    #[test]
    fn every_program_has_policies_in_the_template() {
        let template = Template::load().unwrap();
        for program in Program::ALL {
            let actions = granted_actions(&template, program).unwrap();
            assert!(!actions.is_empty(), "{program}");
        }
        // WorkerInputAccess is a policy of its own, attached to WorkerTaskRole.
        assert!(granted_actions(&template, Program::Worker).unwrap().contains("s3:GetObjectVersion"));
    }

    #[test]
    fn the_coverage_check_fails_on_an_unused_grant_and_on_a_stale_reason() {
        let template = Template::load().unwrap();
        // GIVEN decisions that used every granted action but sqs:SendMessage of the trigger
        let decisions: Vec<Decision> = Program::ALL
            .iter()
            .flat_map(|&program| {
                granted_actions(&template, program).unwrap().into_iter().map(move |action| Decision {
                    user: program.user().to_owned(),
                    action,
                    resource: "*".to_owned(),
                    allowed: true,
                })
            })
            .filter(|d| !(d.user == "sluice-trigger" && d.action == "sqs:SendMessage"))
            .collect();
        let mut grants = coverage(&template, &decisions).unwrap();
        // THEN the check names it
        let err = check_coverage(&grants).unwrap_err().to_string();
        assert!(err.contains("TriggerRole sqs:SendMessage"), "{err}");
        // AND once used, the check passes; a reason for something no longer granted fails it
        grants.iter_mut().for_each(|g| g.used = g.used.max(1));
        check_coverage(&grants).unwrap();
        grants.retain(|g| g.action != "iam:PassRole");
        let err = check_coverage(&grants).unwrap_err().to_string();
        assert!(err.contains("TriggerRole iam:PassRole"), "{err}");
    }

    #[test]
    fn an_access_key_hides_its_secret_when_printed() {
        let key = AccessKey { access_key_id: "AKIA1".to_owned(), secret_access_key: "s3cr3t".to_owned() };
        assert!(!format!("{key:?}").contains("s3cr3t"));
    }
}
