# tests/hf_tokenizer_text.py - writes the varied UTF-8 text that tests/hf_tokenizer_test.sh
# encodes on both sides: whitespace runs, digits, CJK, emoji, combining marks, many scripts,
# contractions, and every added token of the tokenizer.json given, in context.
# usage: python3 hf_tokenizer_text.py TOKENIZER_JSON OUT_FILE [BYTES]
import json, random, sys, unicodedata

tok = json.load(open(sys.argv[1], encoding="utf-8"))
specials = [t["content"] for t in tok.get("added_tokens", [])]
target = int(sys.argv[3]) if len(sys.argv) > 3 else 400_000
rng = random.Random(23)
words = ["the", "The", "THE", "tokenizer", "Mixture", "of", "Experts", "upcycle", "naïve", "café", "Straße",
         "résumé", "façade", "coöperate", "日本語", "中文分词", "한국어", "русский", "Ελληνικά", "עברית",
         "العربية", "हिन्दी", "ภาษาไทย", "tiếng Việt", "ゲーム", "カタカナ", "ひらがな", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Ⅻ", "½", "²"]
spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2028", "\u2003", " \t \n",
          "\u200b", "\ufeff", "\x0b", "\x0c", "\x85"]
emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇩🇪", "🏳️‍🌈", "❤️", "🤖", "🧪", "✨", "🚀", "1️⃣", "©", "™"]
marks = ["e\u0301", "a\u0308", "n\u0303", "A\u030a", "\u1e9b\u0323", "o\u0302\u0323", "\u0915\u093c", "Å", "Ω", "ﬁ"]
punct = ["!", "?", ".", "...", ",", ";", ":", "-", "--", "—", "(", ")", "[", "]", "{", "}", "\"", "'", "`", "#",
         "$", "%", "&", "*", "+", "=", "<", ">", "/", "\\", "|", "~", "^", "@", "_", "«", "»", "“", "”", "、", "。", "！"]
contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D", "’s"]

def number():
    k = rng.randrange(6)
    if k == 0: return str(rng.randrange(10 ** rng.randrange(1, 25)))
    if k == 1: return f"{rng.random() * 1e6:,.3f}"
    if k == 2: return "0x%x" % rng.randrange(1 << 32)
    if k == 3: return "".join(rng.choice("٠١٢٣٤٥٦٧٨٩") for _ in range(rng.randrange(1, 8)))
    if k == 4: return "".join(rng.choice("０１２３４５６７８９") for _ in range(rng.randrange(1, 6)))
    return f"{rng.randrange(2030)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"

def special():
    s = rng.choice(specials) if specials else "<|endoftext|>"
    k = rng.randrange(5)
    if k == 0: return s[: rng.randrange(1, len(s))]  # a partial: never the token
    if k == 1: return " " + s + " "
    if k == 2: return s + s
    return s

def assigned_char():
    # Code points assigned by Unicode 14 (Python's and PCRE2 10.42's tables): Node's newer
    # tables class later additions as letters or symbols, which splits them differently.
    while True:
        c = chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x2FFF), rng.randrange(0x1F300, 0x1FAFF)]))
        if unicodedata.category(c) != "Cn":
            return c

parts = []
size = 0
pickers = [lambda: rng.choice(words), lambda: rng.choice(spaces) * rng.randrange(1, 40), number,
           lambda: rng.choice(emoji), lambda: rng.choice(marks), lambda: rng.choice(punct) * rng.randrange(1, 4),
           lambda: rng.choice(words) + rng.choice(contractions), special, lambda: " " + rng.choice(words),
           lambda: "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(rng.randrange(1, 12))),
           lambda: assigned_char()]
while size < target:
    p = rng.choice(pickers)()
    parts.append(p)
    size += len(p.encode("utf-8"))
    if rng.randrange(8) == 0:
        parts.append(" ")
for s in specials:  # each added token once in a sentence, at the start and at the end
    parts.append(f"\nbefore{s}after {s} x{s}\n")
text = "".join(parts)
if specials:
    text = specials[0] + text + specials[-1]
open(sys.argv[2], "w", encoding="utf-8", newline="").write(text)
