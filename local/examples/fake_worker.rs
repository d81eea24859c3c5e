//! A stand-in for `worker` that exercises the harness end to end before the real one exists:
//! drains `QUEUE_URL`; for each `{"bucket", "key", "output_bucket"}` job it copies the object to
//! the output bucket as `<key>.out` with a `<key>.report.json` beside it, deletes the message, and
//! exits 0 after `EMPTY_POLLS_BEFORE_EXIT` empty polls of `POLL_WAIT_SECONDS`.

use aws_config::BehaviorVersion;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue_url = std::env::var("QUEUE_URL")?;
    let empty_polls_before_exit: u32 = std::env::var("EMPTY_POLLS_BEFORE_EXIT")?.parse()?;
    let wait: i32 = std::env::var("POLL_WAIT_SECONDS")?.parse()?;
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let s3 = aws_sdk_s3::Client::new(&config);
    let mut empty_polls = 0;
    while empty_polls < empty_polls_before_exit {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .send()
            .await?;
        if received.messages().is_empty() {
            empty_polls += 1;
            continue;
        }
        empty_polls = 0;
        for message in received.messages() {
            let job: Value = serde_json::from_str(message.body().unwrap_or_default())?;
            let bucket = job["bucket"].as_str().unwrap_or_default();
            let output_bucket = job["output_bucket"].as_str().unwrap_or_default();
            let key = sluice_local::events::decode_key(job["key"].as_str().unwrap_or_default());
            let object = s3.get_object().bucket(bucket).key(&key).send().await?;
            let body = object.body.collect().await?.into_bytes();
            let rows = body.split(|b| *b == b'\n').filter(|line| !line.is_empty()).count();
            s3.put_object().bucket(output_bucket).key(format!("{key}.out")).body(body.to_vec().into()).send().await?;
            let report = json!({ "status": "succeeded", "rows_in": rows, "input": format!("s3://{bucket}/{key}") });
            s3.put_object()
                .bucket(output_bucket)
                .key(format!("{key}.report.json"))
                .body(report.to_string().into_bytes().into())
                .send()
                .await?;
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await?;
            eprintln!("fake_worker: processed s3://{bucket}/{key} ({rows} lines)");
        }
    }
    Ok(())
}
