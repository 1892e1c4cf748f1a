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

/// The file names in `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_message_queued_in_one_step_is_one_file_until_its_state_changes() {
    let dir = tempfile::tempdir().unwrap();
    let queue_dir = dir.path().join("queue");
    let queue = Queue::open(&queue_dir).unwrap();
    let mut spool = Spool::create(&dir.path().join("spool")).unwrap();
    spool.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
    let mut first = entry("G7");
    first.received = "Received: by test\n".into();
    queue.enqueue(&first, &mut spool).unwrap();
    drop(spool);

    assert_eq!(names(&queue_dir), ["G7.qf"]);
    assert_eq!(queue.load("G7").unwrap(), first);
    assert_eq!(queue.entries().unwrap(), (vec![first.clone()], Vec::new()));
    assert_eq!(queue.read_text("G7").unwrap(), b"Subject: x\n\nbody\n");
    assert_eq!(queue.take_touched(), ["G7"]);

    // A change of state writes the envelope beside it, which takes over.
    queue
        .update("G7", |e| e.recipients[0].attempts = 3)
        .unwrap();
    assert_eq!(names(&queue_dir), ["G7.env", "G7.qf"]);
    let reopened = Queue::open(&queue_dir).unwrap();
    let (entries, errors) = reopened.entries().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].recipients[0].attempts, 3);
    assert_eq!(reopened.load("G7").unwrap().recipients[0].attempts, 3);
    assert_eq!(reopened.read_text("G7").unwrap(), b"Subject: x\n\nbody\n");

    reopened
        .update("G7", |e| e.recipients[0].state = State::Done)
        .unwrap();
    assert!(names(&queue_dir).is_empty());
}

#[test]
fn an_envelope_left_without_text_by_an_interrupted_removal_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let mut spool = Spool::create(&dir.path().join("spool")).unwrap();
    spool.write(b"t\r\n").unwrap();
    queue.enqueue(&entry("H8"), &mut spool).unwrap();
    queue
        .update("H8", |e| e.recipients[0].attempts = 1)
        .unwrap();
    // Removal takes the `.qf` first; a crash before the `.env` follows leaves it alone.
    fs::remove_file(dir.path().join("H8.qf")).unwrap();
    let reopened = Queue::open(dir.path()).unwrap();
    assert_eq!(names(dir.path()), ["spool"]);
    assert!(reopened.entries().unwrap().0.is_empty());
}

#[test]
fn a_queue_file_without_its_footer_is_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    fs::write(dir.path().join("J9.qf"), b"just text\n").unwrap();
    let (entries, errors) = queue.entries().unwrap();
    assert!(entries.is_empty());
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("J9.qf"), "{errors:?}");
    assert!(queue.load("J9").is_err());
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
