//! What counts as text in a message: `send` refuses a text with nothing visible in it.

/// Whether `text` shows nothing: only whitespace (ASCII or Unicode: no-break, ideographic,
/// line and paragraph separators, …), invisible format characters (zero-width space and
/// joiners, word joiner, byte order mark, soft hyphen, direction marks and overrides, tags),
/// combining grapheme joiners and variation selectors (which attach to nothing on their own),
/// fillers that draw as blanks (Hangul fillers, the braille blank), and control characters.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
}

/// Characters that render as nothing, or as a blank, but are not `White_Space` in Unicode.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{061C}'                // Arabic letter mark
            | '\u{115F}' | '\u{1160}'   // Hangul choseong and jungseong fillers
            | '\u{17B4}' | '\u{17B5}'   // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}'   // Mongolian variation selectors and vowel separator
            | '\u{200B}'..='\u{200F}'   // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{202A}'..='\u{202E}'   // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{206F}'   // word joiner, invisible operators, isolates, deprecated format
            | '\u{2800}'                // braille pattern blank
            | '\u{3164}'                // Hangul filler
            | '\u{FE00}'..='\u{FE0F}'   // variation selectors
            | '\u{FEFF}'                // zero-width no-break space (byte order mark)
            | '\u{FFA0}'                // halfwidth Hangul filler
            | '\u{FFF9}'..='\u{FFFB}'   // interlinear annotation
            | '\u{1D173}'..='\u{1D17A}' // musical format characters
            | '\u{E0000}'..='\u{E007F}' // tags
            | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

#[cfg(test)]
mod tests {
    use super::is_blank;

    #[test]
    fn invisible_and_unicode_spaces_are_blank() {
        for text in [
            "",
            " \t\n",
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
            "\u{3000}\u{00A0}\u{2007}\u{202F}\u{205F}\u{1680}",
            "\u{2028}\u{2029}\u{0085}\u{180E}",
            "\u{00AD}\u{034F}\u{FE0F}\u{E0020}\u{3164}\u{2800}",
        ] {
            assert!(is_blank(text), "{text:?}");
        }
        for text in ["a", "\u{200B}hi\u{3000}", "\u{1F600}", "\u{2764}\u{FE0F}", "。"] {
            assert!(!is_blank(text), "{text:?}");
        }
    }
}
