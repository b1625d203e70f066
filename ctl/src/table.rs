//! The two text layouts etcdctl uses: olekukonko/tablewriter's ASCII tables
//! (`-w table`: centered upper-case headers, right-aligned cells) and Go's
//! `text/tabwriter` with tab padding (help and usage text).

/// An ASCII table as etcdctl's `-w table` prints it.
pub fn ascii_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let border = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let mut out = border.clone();
    out.push('|');
    for (h, w) in header.iter().zip(&widths) {
        let len = h.chars().count();
        let gap = w - len;
        let left = gap / 2;
        out.push(' ');
        out.push_str(&" ".repeat(left));
        out.push_str(h);
        out.push_str(&" ".repeat(gap - left));
        out.push_str(" |");
    }
    out.push('\n');
    out.push_str(&border);
    for row in rows {
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            out.push(' ');
            out.push_str(&" ".repeat(w - cell.chars().count()));
            out.push_str(cell);
            out.push_str(" |");
        }
        out.push('\n');
    }
    out.push_str(&border);
    out
}

/// Go's `tabwriter.NewWriter(w, 0, 8, 1, '\t', 0)` applied to a whole
/// text: cells end at tabs, a column's width is its widest cell plus one
/// rounded up to a multiple of 8, padding is written as tabs, and a line
/// without a cell in a column ends that column's block.
pub fn tabwrite(text: &str) -> String {
    const TAB_WIDTH: usize = 8;
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    // widths[line][col] of the padded cell, filled block by block.
    let mut padded: Vec<Vec<usize>> = lines
        .iter()
        .map(|cells| vec![0; cells.len().saturating_sub(1)])
        .collect();
    fn format_block(
        lines: &[Vec<&str>],
        padded: &mut [Vec<usize>],
        start: usize,
        end: usize,
        col: usize,
    ) {
        let mut line = start;
        while line < end {
            if col >= lines[line].len() - 1 {
                line += 1;
                continue;
            }
            let block_start = line;
            let mut width = 0;
            while line < end && col < lines[line].len() - 1 {
                width = width.max(lines[line][col].chars().count() + 1);
                line += 1;
            }
            let width = width.div_ceil(TAB_WIDTH) * TAB_WIDTH;
            for p in padded.iter_mut().take(line).skip(block_start) {
                p[col] = width;
            }
            format_block(lines, padded, block_start, line, col + 1);
        }
    }
    format_block(&lines, &mut padded, 0, lines.len(), 0);
    let mut out = String::with_capacity(text.len() + 64);
    for (i, cells) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for (c, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < cells.len() {
                let textw = cell.chars().count();
                let n = padded[i][c].saturating_sub(textw);
                out.push_str(&"\t".repeat(n.div_ceil(TAB_WIDTH)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_centers_headers_and_right_aligns_cells() {
        let t = ascii_table(
            &["ENDPOINT", "HASH"],
            &[vec!["127.0.0.251:23790".into(), "3121047553".into()]],
        );
        assert_eq!(
            t,
            "+-------------------+------------+\n\
             |     ENDPOINT      |    HASH    |\n\
             +-------------------+------------+\n\
             | 127.0.0.251:23790 | 3121047553 |\n\
             +-------------------+------------+\n"
        );
    }

    #[test]
    fn tabwriter_pads_with_tabs_to_multiples_of_eight() {
        let text =
            "      --limit=0\tMaximum\n      --print-value-only[=false]\tOnly\nX:\n\tget - Gets";
        assert_eq!(
            tabwrite(text),
            "      --limit=0\t\t\t\tMaximum\n      --print-value-only[=false]\tOnly\nX:\n\tget - Gets"
        );
    }
}
