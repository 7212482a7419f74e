//! Aligned tables like Docker's `ls` output.
//!
//! Docker writes its tables through Go's tabwriter with a minimum cell width of 10 and a
//! padding of 3; the same rule here gives the same columns. The last column is not padded,
//! and trailing blanks (an empty last cell) are trimmed.

const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            rows: vec![headers.into_iter().map(Into::into).collect()],
        }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let widths: Vec<usize> = widths
            .iter()
            .map(|w| (w + PADDING).max(MIN_WIDTH))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_like_docker_tabwriter() {
        let mut t = Table::new(["ID", "NAME", "MODE"]);
        t.row(["abc", "a-long-service-name", "replicated"]);
        t.row(["abcdefghijkl", "web", "global"]);
        let want = "\
ID             NAME                  MODE
abc            a-long-service-name   replicated
abcdefghijkl   web                   global
";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn short_columns_get_the_minimum_width_and_empty_tails_are_trimmed() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(["1", "2", ""]);
        t.row(["1", "", ""]);
        let want = "A         B         C\n1         2\n1\n";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let mut t = Table::new(["NAME", "X"]);
        t.row(["\\_ é.1", "y"]);
        let want = "NAME      X\n\\_ é.1    y\n";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn header_only() {
        assert_eq!(Table::new(["ID", "NAME"]).render(), "ID        NAME\n");
    }
}
