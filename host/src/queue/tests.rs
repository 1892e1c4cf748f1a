use std::time::Duration;

use super::*;

fn entry(id: &str) -> Entry {
    Entry {
        id: id.into(),
        sender: "alice@example.net".into(),
        arrival: 100,
        envid: None,
        ret: None,
        eight_bit: false,
        smtputf8: false,
        size: 10,
        received: String::new(),
        kind: Kind::Message,
        recipients: vec![QueuedRecipient::new("bob@example.org".into(), None, None)],
    }
}

#[test]
fn a_prepared_message_is_invisible_until_committed_and_gone_if_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();

    let pending = queue.prepare(&entry("A1"), Text::Bytes(b"hi\n")).unwrap();
    assert!(queue.entries().unwrap().0.is_empty());
    pending.commit().unwrap();
    let (entries, errors) = queue.entries().unwrap();
    assert_eq!(entries, vec![entry("A1")]);
    assert!(errors.is_empty());
    assert_eq!(fs::read(queue.message_path("A1")).unwrap(), b"hi\n");

    drop(queue.prepare(&entry("B2"), Text::Bytes(b"x\n")).unwrap());
    assert!(!queue.message_path("B2").exists());
    assert_eq!(queue.entries().unwrap().0.len(), 1);
}

#[test]
fn open_removes_what_a_crash_left_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    queue
        .prepare(&entry("C3"), Text::Bytes(b"kept\n"))
        .unwrap()
        .commit()
        .unwrap();
    // A crash between prepare and commit: the Pending never ran its Drop.
    std::mem::forget(queue.prepare(&entry("D4"), Text::Bytes(b"half\n")).unwrap());
    fs::write(dir.path().join("E5.msg"), b"orphan").unwrap();

    let queue = Queue::open(dir.path()).unwrap();
    let ids: Vec<String> = queue
        .entries()
        .unwrap()
        .0
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["C3"]);
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["C3.env", "C3.msg"]);
}

#[test]
fn update_is_durable_and_a_finished_entry_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    queue
        .prepare(&entry("F6"), Text::Bytes(b"t\n"))
        .unwrap()
        .commit()
        .unwrap();
    queue
        .update("F6", |e| {
            e.recipients[0].attempts = 2;
            e.recipients[0].last_error = Some("451 later".into());
        })
        .unwrap();
    let reopened = Queue::open(dir.path()).unwrap();
    let loaded = reopened.load("F6").unwrap();
    assert_eq!(loaded.recipients[0].attempts, 2);
    assert_eq!(
        loaded.recipients[0].last_error.as_deref(),
        Some("451 later")
    );

    let done = reopened
        .update("F6", |e| e.recipients[0].state = State::Done)
        .unwrap();
    assert!(done.is_done());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(reopened.take_touched(), ["F6"]);
}

#[test]
fn retry_schedule_grows_and_repeats_its_last_step() {
    let default = retry_schedule(None);
    assert_eq!(default, RETRY_SCHEDULE.to_vec());
    let custom = retry_schedule(Some("1s, 2s"));
    assert_eq!(custom, [Duration::from_secs(1), Duration::from_secs(2)]);
    assert_eq!(retry_schedule(Some("soon")), RETRY_SCHEDULE.to_vec());

    let dir = tempfile::tempdir().unwrap();
    let mut queue = Queue::open(dir.path()).unwrap();
    queue.retry = custom;
    assert_eq!(queue.retry_delay(1), Duration::from_secs(1));
    assert_eq!(queue.retry_delay(2), Duration::from_secs(2));
    assert_eq!(queue.retry_delay(9), Duration::from_secs(2));
}

#[test]
fn flush_request_is_seen_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    assert!(!queue.take_flush_request());
    Queue::request_flush(dir.path()).unwrap();
    assert!(queue.take_flush_request());
    assert!(!queue.take_flush_request());
}

#[test]
fn maildrop_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let drop = maildrop::Drop {
        sender: "root@example.net".into(),
        recipients: vec!["a@example.net".into(), "b@example.org".into()],
        text: b"Subject: x\r\n\r\nbody\r\n\r\nmore\r\n".to_vec(),
    };
    let path = maildrop::write(dir.path(), &drop).unwrap();
    assert_eq!(path.extension().unwrap(), "drop");
    assert_eq!(maildrop::read(&path).unwrap(), drop);

    let bad = maildrop::Drop {
        recipients: vec!["a@x\r\nR evil@x".into()],
        ..drop
    };
    assert!(maildrop::write(dir.path(), &bad).is_err());
}
