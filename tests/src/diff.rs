//! A small line diff for readable golden-test failures.

/// Above this many lines on either side the diff is not computed (the LCS
/// table is lines_a × lines_b); both texts are shown instead.
const DIFF_LINES_MAX: usize = 2000;
/// Lines longer than this are shortened in the report (a 1.7 MB value must
/// not flood the test output).
const LINE_DISPLAY_CHARS_MAX: usize = 300;
/// Lines of one diff or one shown output in a report; the rest is counted.
const REPORT_LINES_MAX: usize = 60;

/// A unified-style diff of `a` against `b`: ` ` common, `-` only in a,
/// `+` only in b.
pub fn line_diff(a: &str, b: &str) -> String {
    truncate_lines(full_line_diff(a, b))
}

fn full_line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    if a.len() > DIFF_LINES_MAX || b.len() > DIFF_LINES_MAX {
        let mut out = String::from("(too long to diff; both sides follow)\n");
        a.iter().for_each(|l| push_line(&mut out, '-', l));
        b.iter().for_each(|l| push_line(&mut out, '+', l));
        return out;
    }
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            push_line(&mut out, ' ', a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            push_line(&mut out, '-', a[i]);
            i += 1;
        } else {
            push_line(&mut out, '+', b[j]);
            j += 1;
        }
    }
    out
}

/// `text` with long lines shortened, for showing one side.
pub fn shorten(text: &str) -> String {
    let mut out = String::new();
    text.lines().for_each(|l| push_line(&mut out, ' ', l));
    truncate_lines(out)
}

fn truncate_lines(text: String) -> String {
    let total = text.lines().count();
    if total <= REPORT_LINES_MAX {
        return text;
    }
    let mut out: String = text
        .lines()
        .take(REPORT_LINES_MAX)
        .flat_map(|l| [l, "\n"])
        .collect();
    out.push_str(&format!("... ({} more lines)\n", total - REPORT_LINES_MAX));
    out
}

fn push_line(out: &mut String, tag: char, line: &str) {
    out.push(tag);
    out.push(' ');
    if line.chars().count() > LINE_DISPLAY_CHARS_MAX {
        let head: String = line.chars().take(LINE_DISPLAY_CHARS_MAX).collect();
        out.push_str(&head);
        out.push_str(&format!("... ({} chars)", line.chars().count()));
    } else {
        out.push_str(line);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_changed_lines() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
        assert_eq!(line_diff("", "a"), "+ a\n");
        assert_eq!(line_diff("a", ""), "- a\n");
    }

    #[test]
    fn long_lines_are_shortened() {
        let long = "x".repeat(1000);
        assert!(shorten(&long).len() < 400);
        let many = "x\n".repeat(1000);
        assert!(shorten(&many).ends_with("... (940 more lines)\n"));
        assert!(line_diff("", &many).ends_with("... (940 more lines)\n"));
    }
}
