//! Helpers shared by the agent's end-to-end tests.

/// Asserts at-least-once delivery: every wanted line arrives, first occurrences in order, and anything
/// else is a repeat of an earlier line (a replay of an unacked payload).
pub fn assert_delivered(got: &[String], want: &[String]) {
    let mut next = 0;
    for line in got {
        if next < want.len() && *line == want[next] {
            next += 1;
        } else {
            assert!(
                want[..next].contains(line),
                "unexpected or out-of-order line {line:?}"
            );
        }
    }
    assert_eq!(
        next,
        want.len(),
        "all {} lines delivered (got {} records)",
        want.len(),
        got.len()
    );
}
