//! Work spread over the task's cores with its results kept in input order: one thread produces
//! items, `threads` threads work on them, and the calling thread consumes the results in the
//! order the items were produced. Channels between the stages are bounded, so at most a few
//! items per thread are in memory whatever the input's size. The first error stops every stage.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use super::TransformError;

/// Runs the pipeline. `produce` hands each item to its `emit` argument, which answers false
/// once nothing downstream listens any more (then `produce` should stop: another stage's error
/// says why). `work` gets a state of its own on each thread (reused buffers).
pub fn ordered_map<T: Send, R: Send, S: Default>(
    threads: usize,
    produce: impl FnOnce(&mut dyn FnMut(T) -> bool) -> Result<(), TransformError> + Send,
    work: impl Fn(&mut S, T) -> Result<R, TransformError> + Sync,
    mut consume: impl FnMut(R) -> Result<(), TransformError>,
) -> Result<(), TransformError> {
    let threads = threads.max(1);
    let work = &work;
    std::thread::scope(|scope| -> Result<(), TransformError> {
        let (item_tx, item_rx) = sync_channel::<(u64, T)>(threads);
        let item_rx: Arc<Mutex<Receiver<(u64, T)>>> = Arc::new(Mutex::new(item_rx));
        let (done_tx, done_rx) = sync_channel::<(u64, Result<R, TransformError>)>(threads);

        let producer = scope.spawn(move || {
            let mut seq = 0;
            produce(&mut |item| {
                let sent = item_tx.send((seq, item)).is_ok();
                seq += 1;
                sent
            })
        });
        for _ in 0..threads {
            let (item_rx, done_tx) = (item_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                let mut state = S::default();
                loop {
                    let next = item_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((seq, item))) = next else { break };
                    if done_tx.send((seq, work(&mut state, item))).is_err() {
                        break;
                    }
                }
            });
        }
        drop((item_rx, done_tx));

        let mut pending = BTreeMap::new();
        let mut next = 0;
        for (seq, result) in done_rx {
            pending.insert(seq, result?);
            while let Some(result) = pending.remove(&next) {
                consume(result)?;
                next += 1;
            }
        }
        producer.join().map_err(|_| TransformError::Io(std::io::Error::other("the reading thread panicked")))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_input_order_whatever_the_threads_finish_first() {
        let mut seen = Vec::new();
        ordered_map(
            4,
            |emit| {
                for i in 0..200u64 {
                    assert!(emit(i));
                }
                Ok(())
            },
            // Later items finish sooner.
            |_: &mut (), i| {
                std::thread::sleep(std::time::Duration::from_micros(200 - i));
                Ok(i * 2)
            },
            |r| {
                seen.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_error_stops_the_producer() {
        let mut produced = 0;
        let result = ordered_map(
            2,
            |emit| {
                for i in 0..1_000_000u64 {
                    produced += 1;
                    if !emit(i) {
                        break;
                    }
                }
                Ok(())
            },
            |_: &mut (), i| if i == 10 { Err(TransformError::Empty) } else { Ok(i) },
            |_| Ok(()),
        );
        assert!(matches!(result, Err(TransformError::Empty)));
        assert!(produced < 1000, "the producer went on to {produced}");
    }
}
