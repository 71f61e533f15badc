//! Invalid files: each error names file:line:col, the field, and what is wrong.

use super::*;

#[test]
fn duplicate_listener_name() {
    let text =
        format!("{BASE}\n[[listener]]\nname = \"web\"\nbind = \"0.0.0.0:8081\"\npool = \"api\"\n");
    assert_error(
        &text,
        "\"web\"",
        3,
        "listener[1].name",
        &["duplicate listener name \"web\"", "t.toml:3:8"],
    );
}

#[test]
fn unknown_pool() {
    let text =
        format!("{BASE}\n[[listener]]\nname = \"x\"\nbind = \"0.0.0.0:8081\"\npool = \"nope\"\n");
    assert_error(
        &text,
        "\"nope\"",
        0,
        "listener[1].pool",
        &["unknown pool \"nope\" (defined pools: web, api)"],
    );
}

#[test]
fn zero_weight() {
    let text = BASE.replace("name = \"b\"", "name = \"b\"\nweight = 0");
    assert_error(
        &text,
        "0\n",
        0,
        "pool[0].backend[1].weight",
        &["between 1 and 65535", "got 0"],
    );
}

#[test]
fn bad_address() {
    let text = BASE.replace("127.0.0.1:9002", "localhost:9002");
    assert_error(
        &text,
        "\"localhost",
        0,
        "pool[0].backend[1].address",
        &["bad address", "IP:port"],
    );
    let text = BASE.replace("127.0.0.1:9002", "127.0.0.1:0");
    assert_error(
        &text,
        "\"127.0.0.1:0\"",
        0,
        "pool[0].backend[1].address",
        &["port 0"],
    );
    let text = BASE.replace("0.0.0.0:8080", "0.0.0.0");
    assert_error(
        &text,
        "\"0.0.0.0\"",
        0,
        "listener[0].bind",
        &["bad address"],
    );
}

#[test]
fn unknown_key() {
    let text = BASE.replace("name = \"b\"", "name = \"b\"\nwieght = 2");
    assert_error(
        &text,
        "wieght",
        0,
        "pool[0].backend[1].wieght",
        &["unknown field `wieght`", "weight"],
    );
    let text = format!("colour = \"blue\"\n{BASE}");
    assert_error(&text, "colour", 0, "colour", &["unknown field"]);
    let text = format!("[tuning]\nring_entry = 8\n{BASE}");
    assert_error(
        &text,
        "ring_entry",
        0,
        "tuning.ring_entry",
        &["unknown field"],
    );
}

#[test]
fn wrong_types_name_the_field() {
    let text = BASE.replace("name = \"b\"", "name = \"b\"\nweight = \"heavy\"");
    assert_error(
        &text,
        "\"heavy\"",
        0,
        "pool[0].backend[1].weight",
        &["expected an integer"],
    );
    let text = format!("[features]\nmultishot = \"yes\"\n{BASE}");
    assert_error(
        &text,
        "\"yes\"",
        0,
        "features.multishot",
        &["true or false"],
    );
    let text = format!("engine = \"nope\"\n{BASE}");
    assert_error(
        &text,
        "\"nope\"",
        0,
        "engine",
        &["uring", "epoll", "blocking"],
    );
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nalgorithm = \"fastest\"");
    assert_error(
        &text,
        "\"fastest\"",
        0,
        "pool[1].algorithm",
        &["round-robin", "source-hash"],
    );
    let text = BASE.replace("pool = \"web\"", "pool = \"web\"\nmode = \"teleport\"");
    assert_error(
        &text,
        "\"teleport\"",
        0,
        "listener[0].mode",
        &["copy", "splice", "auto"],
    );
}

#[test]
fn missing_required_field() {
    let text = BASE.replace("bind = \"0.0.0.0:8080\"\n", "");
    let message = error(&text);
    assert!(message.starts_with("t.toml:"), "{message}");
    assert!(
        message.contains("listener[0]") && message.contains("missing field `bind`"),
        "{message}"
    );
}

#[test]
fn duplicate_backend_names() {
    let text = BASE.replace("name = \"b\"", "name = \"a\"");
    assert_error(
        &text,
        "\"a\"",
        1,
        "pool[0].backend[1].name",
        &["duplicate backend name \"a\""],
    );
    // Defaulted names collide when the address repeats.
    let text = format!("{BASE}\n[[pool.backend]]\naddress = \"127.0.0.1:9101\"\n");
    assert_error(
        &text,
        "\"127.0.0.1:9101\"",
        1,
        "pool[1].backend[1].name",
        &["duplicate backend name"],
    );
}

#[test]
fn duplicate_pool_names() {
    let text = BASE.replace("name = \"api\"", "name = \"web\"");
    assert_error(
        &text,
        "\"web\"",
        3,
        "pool[1].name",
        &["duplicate pool name \"web\""],
    );
}

#[test]
fn retries_too_large() {
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nretries = 8");
    assert_error(
        &text,
        "8\n",
        0,
        "pool[1].retries",
        &["between 0 and 7", "8 candidates"],
    );
    let text = BASE.replace("name = \"api\"", "name = \"api\"\nretries = -1");
    assert_error(&text, "-1", 0, "pool[1].retries", &["between 0 and 7"]);
}

#[test]
fn workers_zero_and_bad() {
    let text = format!("workers = 0\n{BASE}");
    assert_error(&text, "0\n", 0, "workers", &["\"auto\" or between 1 and"]);
    let text = format!("workers = \"many\"\n{BASE}");
    assert_error(&text, "\"many\"", 0, "workers", &["\"auto\" or an integer"]);
    let text = format!("workers = 3\n{BASE}");
    assert_eq!(load(&text).expect("valid").workers, Workers::Count(3));
}

#[test]
fn bad_durations() {
    for bad in [
        "\"2\"",
        "\"2 parsecs\"",
        "\"\"",
        "\"-1s\"",
        "\"1..5s\"",
        "\"169h\"",
        "\"0s\"",
    ] {
        let text = format!("[timeouts]\nconnect = {bad}\n{BASE}");
        assert_error(&text, bad, 0, "timeouts.connect", &[]);
    }
    let text = format!("[timeouts]\nidle = 300\n{BASE}");
    assert_error(&text, "300", 0, "timeouts.idle", &["expected a string"]);
    // Zero is allowed only for the shutdown grace.
    let text = format!("[timeouts]\nshutdown_grace = \"0s\"\n{BASE}");
    assert_eq!(
        load(&text).expect("valid").timeouts.shutdown_grace,
        Duration::ZERO
    );
}

#[test]
fn pool_without_backends() {
    let text = format!("{BASE}\n[[pool]]\nname = \"empty\"\n");
    let message = error(&text);
    let line = BASE.lines().count() + 2;
    assert!(message.starts_with(&format!("t.toml:{line}:")), "{message}");
    assert!(
        message.contains("pool[2].backend: pool \"empty\" has no backends"),
        "{message}"
    );
}

#[test]
fn duplicate_bind_addresses() {
    let text = format!(
        "{BASE}\n[[listener]]\nname = \"other\"\nbind = \"0.0.0.0:8080\"\npool = \"api\"\n"
    );
    assert_error(
        &text,
        "\"0.0.0.0:8080\"",
        1,
        "listener[1].bind",
        &["duplicate bind address"],
    );
}

#[test]
fn no_listener() {
    let message = error("[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:1\"\n");
    assert_eq!(
        message,
        "t.toml: listener: no [[listener]] is defined; at least one is needed"
    );
}

#[test]
fn tuning_checks() {
    let text = format!("[tuning]\nring_entries = 3000\n{BASE}");
    assert_error(
        &text,
        "3000",
        0,
        "tuning.ring_entries",
        &["power of two such as 2048 or 4096"],
    );
    // One entry cannot hold a connect and its linked timeout; the kernel takes at most 32768.
    for (n, bound) in [("1", "2"), ("65536", "32768")] {
        let text = format!("[tuning]\nring_entries = {n}\n{BASE}");
        let words = ["between 2 and 32768", "queued together as 2 entries", bound];
        assert_error(&text, n, 0, "tuning.ring_entries", &words);
    }
    let text = format!("[tuning]\nbuffer_count = 65536\n{BASE}");
    assert_error(
        &text,
        "65536",
        0,
        "tuning.buffer_count",
        &["between 1 and 32768"],
    );
    let text = format!("[tuning]\npipe_size = \"256KB\"\n{BASE}");
    assert_error(&text, "\"256KB\"", 0, "tuning.pipe_size", &["unknown unit"]);
    let text = format!("[tuning]\npipe_size = 100\n{BASE}");
    assert_error(&text, "100", 0, "tuning.pipe_size", &["between 4096"]);
    let text = format!("[tuning]\nbuffer_count = 32768\nbuffer_size = \"64KiB\"\n{BASE}");
    assert_error(&text, "\"64KiB\"", 0, "tuning.buffer_size", &["at most"]);
    let text = format!("[tuning]\nsend_rings = 5000\n{BASE}");
    assert_error(
        &text,
        "5000",
        0,
        "tuning.send_rings",
        &["between 0 and 4096"],
    );
}

#[test]
fn cpus_are_checked_against_the_mask() {
    let text = format!("cpus = [0, 9]\n{BASE}");
    assert_error(
        &text,
        "9",
        0,
        "cpus[1]",
        &["CPU 9 is not in this process's affinity mask (available: 0-3)"],
    );
    let text = format!("workers = 3\ncpus = [0, 1]\n{BASE}");
    assert_error(
        &text,
        "[0, 1]",
        0,
        "cpus",
        &["lists 2 CPUs but workers = 3"],
    );
    let text = format!("cpus = [1, 1]\n{BASE}");
    assert_error(&text, "1]", 0, "cpus[1]", &["duplicate CPU"]);
    let text = format!("cpus = []\n{BASE}");
    assert_error(&text, "[]", 0, "cpus", &["at least one"]);
    // auto with a list: one worker per listed CPU.
    let text = format!("cpus = [2, 0]\n{BASE}");
    assert_eq!(load(&text).expect("valid").worker_cpus_in(MASK), vec![2, 0]);
    // A fixed count beyond the mask wraps around it.
    let text = format!("workers = 3\n{BASE}");
    assert_eq!(
        load(&text).expect("valid").worker_cpus_in(&[5, 7]),
        vec![5, 7, 5]
    );
}

#[test]
fn syntax_error_has_a_position() {
    let message = error("engine = \n");
    assert!(message.starts_with("t.toml:1:"), "{message}");
    assert!(message.contains("invalid TOML"), "{message}");
}
