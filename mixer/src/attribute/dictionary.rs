//! Istio 1.4's global word list: the words a proxy may send as non-negative
//! indexes instead of spelling them out. Index = line number − 1; every line
//! is a word exactly as written, quotes included.

use std::collections::HashMap;
use std::sync::LazyLock;

static TEXT: &str = include_str!("global_dictionary.txt");

static WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| TEXT.lines().collect());

/// Hashed with foldhash: every Check answer names its referenced
/// attributes by index, a score of lookups per request.
static INDEX: LazyLock<HashMap<&'static str, i32, foldhash::fast::RandomState>> =
    LazyLock::new(|| {
        let mut index = HashMap::default();
        for (i, word) in WORDS.iter().enumerate() {
            // The first occurrence wins should a word repeat.
            index.entry(*word).or_insert(i as i32);
        }
        index
    });

/// The global dictionary, in wire order.
pub fn words() -> &'static [&'static str] {
    &WORDS
}

/// The global index of `word`, if the dictionary has it.
pub fn index_of(word: &str) -> Option<i32> {
    INDEX.get(word).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_1_4_word_list() {
        assert_eq!(words().len(), 222);
        assert_eq!(words()[0], "source.ip");
        assert_eq!(index_of("source.ip"), Some(0));
        // Quoted words stay quoted: they are distinct from the bare ones.
        assert!(index_of("'200'").is_some());
        assert_eq!(index_of("no such word"), None);
    }
}
