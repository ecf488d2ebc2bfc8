//! Text cut to a bound, saying so: what the engine keeps of a reason, what a status or an
//! Event says of a long message.

/// Cuts `text` to at most `chars` characters, saying so.
pub fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` cut to at most `chars` characters at a line end where it can, saying how many lines
/// were left out.
pub fn cut_lines(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let budget = chars.saturating_sub(40);
    let mut out = String::new();
    let mut lines = text.lines();
    let mut kept = 0;
    for line in lines.by_ref() {
        if out.chars().count() + line.chars().count() + 1 > budget {
            if kept == 0 {
                out.extend(line.chars().take(budget));
                kept = 1;
            }
            break;
        }
        out.push_str(line);
        out.push('\n');
        kept += 1;
    }
    let total = text.lines().count();
    let more = total.saturating_sub(kept);
    out.push_str(&format!("… and {more} more lines"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_marks_a_cut_in_characters_not_bytes() {
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo", 4), "hél…");
        assert_eq!(cut("héllo", 4).chars().count(), 4);
        assert_eq!(cut("abc", 0), "…");
    }

    #[test]
    fn cut_lines_ends_at_a_line_and_counts_what_it_left_out() {
        assert_eq!(cut_lines("short", 10), "short");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let out = cut_lines(&text, 100);
        assert!(out.chars().count() <= 100, "{out}");
        assert!(out.starts_with("line 0\nline 1\n"), "{out}");
        assert!(out.ends_with("more lines"), "{out}");
        let kept = out.lines().count() - 1;
        assert!(
            out.contains(&format!("… and {} more lines", 100 - kept)),
            "{out}"
        );
        // One line longer than the bound is cut inside it.
        let long = "x".repeat(500);
        assert!(cut_lines(&long, 100).starts_with(&"x".repeat(60)));
    }
}
