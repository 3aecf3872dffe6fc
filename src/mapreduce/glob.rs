//! Input patterns: `*` (any run of characters but `/`) and `?` (one character) in any path
//! component, matched against the file system in sorted order. A pattern without wildcards
//! names one file. Enough for `--input 'data/*.txt'` without a dependency.

use std::path::{Path, PathBuf};

/// Whether `name` matches the one-component `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Classic wildcard matching with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The files matching `pattern`, sorted. Hidden files match only a pattern starting with `.`.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    if !has_wildcard(pattern) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let absolute = pattern.starts_with('/');
    let mut current = vec![if absolute {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for component in &components {
        let mut next = Vec::new();
        for base in &current {
            if !has_wildcard(component) {
                next.push(base.join(component));
                continue;
            }
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| !name.starts_with('.') || component.starts_with('.'))
                .filter(|name| matches(component, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| base.join(name)));
        }
        current = next;
    }
    if current.is_empty() {
        return Err(format!("no file matches {pattern:?}"));
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    //! Wildcards against names.
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches("*.txt", "a.txt"));
        assert!(matches("*.txt", ".txt"));
        assert!(!matches("*.txt", "a.txt2"));
        assert!(matches("pg-*.t?t", "pg-being_ernest.txt"));
        assert!(matches("*", ""));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("plain", "plain"));
    }
}
