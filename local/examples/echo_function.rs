//! A tiny Lambda function for the Runtime API emulator's tests. Given a JSON object, it
//! - sleeps `sleep_ms` milliseconds first, when asked;
//! - exits the process with `exit` as status (a crash), when asked;
//! - fails with `fail` as the message and `EchoFailure` as the type, when asked;
//! - otherwise answers `{"echo": <payload>, "request_id", "function_arn", "env": {…}}`.

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let payload = event.payload;
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        eprintln!("echo_function: exiting with status {code} as asked");
        std::process::exit(i32::try_from(code).unwrap_or(1));
    }
    if let Some(message) = payload.get("fail").and_then(Value::as_str) {
        return Err(Diagnostic { error_type: "EchoFailure".to_owned(), error_message: message.to_owned() });
    }
    let env: serde_json::Map<String, Value> = ["ECHO_SETTING", "AWS_LAMBDA_FUNCTION_NAME", "HOME", "CARGO"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), Value::String(std::env::var(name).ok()?))))
        .collect();
    Ok(json!({
        "echo": payload,
        "request_id": event.context.request_id,
        "function_arn": event.context.invoked_function_arn,
        "env": env,
    }))
}
