//! The example queries of docs/schema.md and the seed data they are checked on.

use cityops_testkit::repo_root;

/// `(title, sql)` of every query under "## Example queries" of docs/schema.md.
pub fn example_queries() -> Vec<(String, String)> {
    queries_under("docs/schema.md", "## Example queries")
}

/// `(title, sql)` of every ```sql block of the Markdown file `doc` (from the repository root)
/// between the heading `section` and the next `## ` heading, titled by its `### ` heading.
pub fn queries_under(doc: &str, section: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join(doc)).unwrap();
    let section = text
        .split(section)
        .nth(1)
        .unwrap_or_else(|| panic!("{doc} has {section}"))
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let mut queries = Vec::new();
    let mut title = String::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(t) = line.strip_prefix("### ") {
            title = t.to_owned();
        } else if line.trim() == "```sql" {
            let sql: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            queries.push((title.clone(), sql.join("\n")));
        }
    }
    queries
}

/// The seed statements of tests/fixtures/seed.sql.
pub fn seed_statements() -> Vec<String> {
    let text = include_str!("../fixtures/seed.sql");
    let without_comments: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect();
    without_comments
        .join("\n")
        .split(";\n")
        .map(str::trim)
        .map(|s| s.trim_end_matches(';').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn docs_have_at_least_ten_example_queries() {
    let queries = example_queries();
    assert!(
        queries.len() >= 10,
        "only {} example queries",
        queries.len()
    );
    assert!(
        queries
            .iter()
            .all(|(title, sql)| !title.is_empty() && sql.contains("cityops."))
    );
}
