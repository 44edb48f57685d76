//! The executor on real files: I/O, timers, spawn limits, cross-core wakes.

use std::time::{Duration, Instant};

use kiseki_runtime::mesh::Mesh;
use kiseki_runtime::{block_on, dma_buffer, spawn, DmaFile, ExecutorConfig, OpenMode, RuntimeError};

fn small_config() -> ExecutorConfig {
    ExecutorConfig {
        ring_entries: 8,
        dma_arena_bytes: 1 << 20,
        tasks_max: 64,
        ..ExecutorConfig::default()
    }
}

#[test]
fn direct_io_round_trips_through_the_ring() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device");
    std::fs::File::create(&path).unwrap().set_len(1 << 20).unwrap();
    block_on(small_config(), 0, async move {
        let file = DmaFile::open(&path, OpenMode::DEVICE).unwrap();
        // More concurrent writes than ring entries: the submission queue must overflow
        // into the kernel without losing any.
        let mut handles = Vec::new();
        for index in 0..32u64 {
            let path_file = DmaFile::open(&path, OpenMode::DEVICE).unwrap();
            handles.push(
                spawn("writer", async move {
                    let mut buffer = dma_buffer(4096);
                    buffer.fill_from(&[index as u8; 4096]);
                    let (result, _) = path_file.write_all_at(buffer, index * 4096).await;
                    result.unwrap();
                })
                .unwrap(),
            );
        }
        for handle in handles {
            handle.await;
        }
        file.sync_data().await.unwrap();
        for index in 0..32u64 {
            let (result, buffer) = file.read_exact_at(dma_buffer(4096), index * 4096, 4096).await;
            result.unwrap();
            assert!(buffer.as_slice().iter().all(|&byte| byte == index as u8));
        }
        // Unaligned direct I/O is refused, not sent to the kernel.
        let mut buffer = dma_buffer(4096);
        buffer.fill_from(&[1; 100]);
        let (result, _) = file.write_at(buffer, 0).await;
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    })
    .unwrap();
}

#[test]
fn timers_fire_in_order_and_spawn_is_bounded() {
    block_on(small_config(), 0, async {
        let started = Instant::now();
        let late = spawn("late", async {
            kiseki_runtime::sleep(Duration::from_millis(30)).await;
            Instant::now()
        })
        .unwrap();
        let early = spawn("early", async {
            kiseki_runtime::sleep(Duration::from_millis(10)).await;
            Instant::now()
        })
        .unwrap();
        let (early, late) = (early.await, late.await);
        assert!(early <= late);
        assert!(started.elapsed() >= Duration::from_millis(30));
        let mut held = Vec::new();
        let mut refused = false;
        for _ in 0..100 {
            match spawn("idle", kiseki_runtime::sleep(Duration::from_millis(1))) {
                Ok(handle) => held.push(handle),
                Err(RuntimeError::Busy { .. }) => {
                    refused = true;
                    break;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(refused, "tasks_max must refuse spawns with Busy");
        for handle in held {
            handle.await;
        }
    })
    .unwrap();
}

#[test]
fn cores_exchange_messages_over_the_bounded_mesh() {
    let endpoints = Mesh::endpoints::<u64>(2, 4);
    let mut endpoints = endpoints.into_iter();
    let (zero, one) = (endpoints.next().unwrap(), endpoints.next().unwrap());
    let receiver = std::thread::spawn(move || {
        block_on(small_config(), 1, async move {
            let mut sum = 0;
            for _ in 0..1000 {
                let envelope = one.recv().await.unwrap();
                assert_eq!(envelope.from, 0);
                sum += envelope.message;
            }
            // Answer so the sender sees a cross-thread wake in the other direction.
            one.send_to(0, sum).await.unwrap();
        })
        .unwrap()
    });
    let sum = block_on(small_config(), 0, async move {
        for value in 0..1000 {
            zero.send_to(1, value).await.unwrap();
        }
        zero.recv().await.unwrap().message
    })
    .unwrap();
    receiver.join().unwrap();
    assert_eq!(sum, (0..1000).sum::<u64>());
}

#[test]
fn the_stall_detector_counts_a_task_that_holds_the_core() {
    block_on(small_config(), 0, async {
        let before = kiseki_runtime::stats().unwrap().stalls;
        spawn("hog", async {
            let started = Instant::now();
            // Busy for longer than the 10 ms threshold without yielding.
            while started.elapsed() < Duration::from_millis(25) {
                std::hint::spin_loop();
            }
        })
        .unwrap()
        .await;
        let after = kiseki_runtime::stats().unwrap();
        assert_eq!(after.stalls, before + 1);
        assert!(after.longest_poll_us >= 25_000);
    })
    .unwrap();
}
