//! The Lambda Runtime API emulator, with a real `lambda_runtime` function
//! (examples/echo_function.rs, built by `cargo test`).

use std::time::Duration;

use serde_json::json;
use sluice_local::{AsyncOutcome, DeadLetterQueue, EnvMap, FunctionConfig, LambdaFunction, MotoServer};

fn echo_config() -> FunctionConfig {
    let binary = sluice_local::binaries::workspace_example("echo_function").expect("echo_function is built");
    let env: EnvMap = [("ECHO_SETTING".to_owned(), "from-config".to_owned())].into();
    let mut config = FunctionConfig::new(binary, env);
    config.name = "echo".to_owned();
    config.timeout = Duration::from_secs(10);
    config.async_retry_delay = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn invoke_returns_the_response_or_the_function_error() {
    // GIVEN the echo function under the emulator
    let function = LambdaFunction::start_with(echo_config()).await.expect("function starts");

    // WHEN it is invoked with a plain payload
    let response =
        function.invoke(json!({"hello": "world"})).await.expect("invocation runs").expect("the function succeeds");
    // THEN it answers with the payload, its context and only its configured environment
    assert_eq!(response["echo"], json!({"hello": "world"}));
    assert_eq!(response["function_arn"], function.function_arn());
    assert!(!response["request_id"].as_str().unwrap_or_default().is_empty());
    assert_eq!(response["env"]["ECHO_SETTING"], "from-config");
    assert_eq!(response["env"]["AWS_LAMBDA_FUNCTION_NAME"], "echo");
    assert!(response["env"].get("CARGO").is_none(), "the developer's environment leaked in");

    // WHEN it is asked to fail
    let error =
        function.invoke(json!({"fail": "bad input"})).await.expect("invocation runs").expect_err("the function fails");
    // THEN the error carries its type and message
    assert_eq!(error.error_type, "EchoFailure");
    assert_eq!(error.error_message, "bad input");

    // AND the same process still answers afterwards
    let again = function.invoke(json!({"n": 2})).await.expect("runs").expect("succeeds");
    assert_eq!(again["echo"]["n"], 2);
    function.stop().await;
}

#[tokio::test]
async fn a_crash_or_time_out_is_a_function_error_and_the_next_invocation_cold_starts() {
    // GIVEN the echo function with a 1 s time-out
    let mut config = echo_config();
    config.timeout = Duration::from_secs(1);
    let function = LambdaFunction::start_with(config).await.expect("function starts");

    // WHEN the process exits during an invocation
    let error = function.invoke(json!({"exit": 3})).await.expect("runs").expect_err("crash");
    // THEN Lambda's crash error comes back
    assert_eq!(error.error_type, "Runtime.ExitError");
    assert!(error.error_message.contains("exit status: 3"), "{}", error.error_message);
    // AND the next invocation gets a fresh process
    let response = function.invoke(json!({"after": "crash"})).await.expect("runs").expect("succeeds");
    assert_eq!(response["echo"]["after"], "crash");

    // WHEN an invocation takes longer than the time-out
    let error = function.invoke(json!({"sleep_ms": 5000})).await.expect("runs").expect_err("time-out");
    // THEN it times out, and the function works again afterwards
    assert_eq!(error.error_type, "Sandbox.Timedout");
    let response = function.invoke(json!({"after": "timeout"})).await.expect("runs").expect("succeeds");
    assert_eq!(response["echo"]["after"], "timeout");
    function.stop().await;
}

#[tokio::test]
async fn async_invocation_retries_twice_then_dead_letters_the_event() {
    // GIVEN moto with a dead-letter queue, and the echo function
    let moto = MotoServer::start(None).await.expect("moto starts");
    let config = sluice_local::aws::sdk_config(&moto.endpoint()).await;
    let sqs = sluice_local::aws::sqs_client(&config);
    let queue_url = sqs
        .create_queue()
        .queue_name("echo-dlq")
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("queue URL")
        .to_owned();
    let dead_letter_queue = DeadLetterQueue { sqs: sqs.clone(), queue_url: queue_url.clone() };
    let function = LambdaFunction::start_with(echo_config()).await.expect("function starts");

    // WHEN an event that succeeds is delivered asynchronously
    let delivered =
        function.invoke_async_like_s3(json!({"ok": true}), Some(&dead_letter_queue)).await.expect("delivery runs");
    // THEN one attempt was enough
    assert_eq!(delivered.attempts, 1);
    assert!(matches!(delivered.outcome, AsyncOutcome::Succeeded(_)));

    // WHEN an event the function fails on is delivered asynchronously
    let event = json!({"fail": "always", "Records": []});
    let delivered =
        function.invoke_async_like_s3(event.clone(), Some(&dead_letter_queue)).await.expect("delivery runs");
    // THEN it was tried three times and then sent to the dead-letter queue
    assert_eq!(delivered.attempts, 3);
    let AsyncOutcome::SentToDeadLetterQueue { error, .. } = &delivered.outcome else {
        panic!("expected the dead-letter queue, got {:?}", delivered.outcome);
    };
    assert_eq!(error.error_message, "always");
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let messages = received.messages();
    assert_eq!(messages.len(), 1);
    let body: serde_json::Value = serde_json::from_str(messages[0].body().expect("body")).expect("JSON body");
    assert_eq!(body, event);
    let attributes = messages[0].message_attributes().expect("attributes");
    assert!(attributes["ErrorMessage"].string_value().unwrap_or_default().contains("always"));
    assert!(attributes.contains_key("RequestID"));

    // WHEN there is no dead-letter queue
    let delivered = function.invoke_async_like_s3(event, None).await.expect("delivery runs");
    // THEN the event is discarded after the same attempts
    assert_eq!(delivered.attempts, 3);
    assert!(matches!(delivered.outcome, AsyncOutcome::Discarded { .. }));

    function.stop().await;
    moto.stop().await;
}
