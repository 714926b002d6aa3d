//! order-expire against Laravel itself (Debian's php-laravel-framework, run with `php`):
//!
//! * the `.env` parser against phpdotenv: the same variables, or an error in both, with the rules
//!   of the phpdotenv Debian ships (5.4.1 on bookworm; the 5.5+ rules are unit-tested in
//!   `crates/config/src/dotenv.rs`);
//! * `Str::slug`, which turns `APP_NAME` into the default key prefixes.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use order_expire::config::version::{DotenvRules, DotenvVersion};
use order_expire::config::{dotenv, slug};

const INPUTS: &[&str] = &[
    "A=plain",
    "A = spaced \t",
    "P=p@ss#word",
    "P=pa$word",
    "P=\"pa$word\"",
    "P=\"pa$word!\"",
    "A=$HOME_X",
    "A=${UNDEF}",
    "A=${UNDEF} v2",
    "A=x\nB=${A}y\nC=\"${A}-${B}\"\nD='${A}'\nE=\"\\${A}\"",
    "B=${A}\nA=x",
    "A=${A:-x}",
    "A=\"x\\ty\"",
    "A=\"x\\fy\\vz\\r\\n\"",
    "A=\"a\\\"b\\\\c\"",
    "A=\"\\q\"",
    "A=C:\\path",
    "A=a\\ b",
    "A=a\"b",
    "A=a'b",
    "A=\"x\"y",
    "A=\"x\"\"y\"",
    "A",
    "A=1\nA",
    "export A=1",
    "export AB=1",
    "export\tLONGNAME=1",
    "1A=x",
    "a.b=x",
    "A-B=x",
    "\"QN\"=1",
    "'Q'=1",
    "''=1",
    "=x",
    "A='multi\nline'",
    "A=\"multi\nline\"\nB=2",
    "Z=0\nA=\"x\nB=2",
    "A=1\nA=2",
    "A=\nB=\"\"\nC=''\nD= # c\nE=#c",
    "APP_NAME=My Shop",
    "APP_NAME=\"My Shop\"",
    "APP_NAME='Mall 商城'",
    "A=x # comment\nB=\"y\" # comment\nC='z'#c",
    "# comment\r\nA=1\rB=2\n\n   # indented\nC=3",
    "\u{feff}A=bom",
    "A=(null)\nB=null\nC=(true)\nD=empty",
    "A=\"'inner'\"",
    "A='\"inner\"'",
    "A=\"line\\\\\"",
    "A=\"end with backslash quote\\\\\"\nB=1",
    "REDIS_URL=redis://user:p%40ss@host:6380/2",
    "A=x=y=z",
    "A=\"unterminated",
    "A='unterminated",
    "A=\"  spaced inside  \"",
    "  A  =  x  ",
    "A=\"#not a comment\"",
    "A=val#ue",
    // Whitespace is ASCII to PHP: no-break and ideographic spaces are characters of a value.
    "SHOP_NAME=Mall\u{a0}Shop",
    "SHOP_NAME=Mall\u{3000}Shop",
    "A=x\u{a0}",
    "A=\u{a0}x",
    "A=\x0cx",
    "\x0c",
    "A=1\n\x0c\nB=2",
    "NAME\u{a0}=x",
    "X=\"x\"\u{a0}# note",
    "X=\"x\" \u{a0}# note",
    "A=x\x0by",
    "A=x\x0b# c",
    "A=x\0",
    "\0A=x",
    "A=\"a\u{a0}b\"\u{a0}",
    // Names: ASCII only before phpdotenv 5.5.
    "AlbertÅberg=Skybert",
    "名前=x",
    "export\u{a0}LONGNAME=1",
    "export\x0cLONGNAME=1",
    "export \x0cLONGNAME=1",
    "export\x0bLONGNAME=1",
    "  export   SPACED = \"with spaces\"  ",
    "export \"EDQ\" = 123\nexport 'ESQ' = 456\nexport    ENULL=\"\"",
    // Multi-line values, and a line inside one that looks like a new start.
    "A=\"x\n=\" # c\nB=1\"",
    "A=\"x\nB=\"y\nC=2",
    "A=\"x\nB=\"y\"\"\nC=2",
    "A=\"first\n   second \\\"q\\\"\n   third\"",
    "A=\"k=\"\nB='k='",
    "A=\"x\ny\"z\"\nB=1",
    // Escapes, interpolation and special characters.
    "A=\"a \\\" b \\\\\" # not escaped",
    "A=\"$a6^C7k%zs+e^.jvjXk\"\nB=\"{Q]H))&G$r\"",
    "A=secret!@#\nB='secret!@#'\nC=\"secret!@#\"",
    "A=x\nB=\"${A}${A}\"\nC=${A}${A}\nD=\"$${A}\"",
    "A=x\nB=${A\nC=${}\nD=${A}}",
    "A=\"\\n\\q\"",
    "A=\"\\\u{a0}\"",
    "A='a'#c\nB='b' #c\nC='c'\u{a0}",
];

/// Inputs that are not UTF-8: phpdotenv converts them (`Str::utf8`) before parsing.
const BYTE_INPUTS: &[&[u8]] = &[
    b"A=a\xffb",
    b"A=a\xc3",
    b"A=\xc3\x28x",
    b"A=\xe2\x82x\xe2\x82",
    b"A=\xed\xa0\x80z",
    b"A=\xf0\x9f\x98x",
    b"A=\xf4\x90\x80\x80",
    b"A=\xc0\xafq",
    b"A=\"\xe9t\xe9\"",
    b"A\xff=x",
    b"REDIS_PREFIX=shop\xa0_\nCACHE_PREFIX='\xfe'",
    b"\xef\xbb\xbfA=bom\xff",
];

fn php(input: &[u8], dir: &Path) -> serde_json::Value {
    let file = dir.join("input.env");
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(input))
        .expect("write input");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/php/dotenv.php");
    let output = Command::new("php")
        .arg(script)
        .arg(&file)
        .output()
        .expect("php must be installed (scripts/test installs php-cli and Laravel's packages)");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "php printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The rules of the phpdotenv installed with Debian's Laravel, from its package version.
fn installed_rules() -> DotenvRules {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "php-vlucas-phpdotenv"])
        .output()
        .expect("dpkg-query (Debian's php-vlucas-phpdotenv is what the parity test runs)");
    let version = String::from_utf8_lossy(&output.stdout).into_owned();
    DotenvVersion::rules_of(&version)
        .unwrap_or_else(|| panic!("php-vlucas-phpdotenv version {version:?} not understood"))
}

#[test]
fn the_parser_reads_every_input_as_laravel_does() {
    let rules = installed_rules();
    let dir = tempfile::TempDir::new().expect("temp dir");
    let mut differences = Vec::new();
    let inputs = INPUTS
        .iter()
        .map(|s| s.as_bytes())
        .chain(BYTE_INPUTS.iter().copied());
    for input in inputs {
        let laravel = php(input, dir.path());
        let ours = dotenv::parse(&dotenv::decode(input), rules, &|_| None);
        let same = match (&laravel.get("ok"), &ours) {
            (Some(vars), Ok(ours)) => {
                let ours: serde_json::Map<String, serde_json::Value> = ours
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                **vars == serde_json::Value::Object(ours)
            }
            (None, Err(_)) => laravel.get("error").is_some(),
            _ => false,
        };
        if !same {
            let input = String::from_utf8_lossy(input);
            differences.push(format!(
                "{input:?}\n  laravel: {laravel}\n  ours:    {ours:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} inputs differ (phpdotenv rules {rules:?}):\n{}",
        differences.len(),
        INPUTS.len() + BYTE_INPUTS.len(),
        differences.join("\n")
    );
}

const APP_NAMES: &[&str] = &[
    "Laravel",
    "laravel",
    "My Shop",
    "my-shop_2",
    "Mall 商城",
    "商城",
    "日本語",
    "한국어",
    "Café Zürich",
    "ÄÖÜ ß",
    "Straße",
    "foo-bar_baz",
    "A@B",
    "a@@b",
    "O'Reilly & Sons",
    "Dr. Who",
    "Привет мир",
    "Ёлка Ъ Ы Э Ю Я",
    "emoji 🚀 shop",
    "Ελληνικά ΑΥ Αυ ΕΙ",
    "Việt Nam",
    "Łódź",
    "Øre Åse",
    "İstanbul",
    "  padded  ",
    "--dash--",
    "__under__",
    "a\tb",
    "x.y.z",
    "100% Pure",
    "C++ / C#",
    "",
    "true",
    "Tab\tNew\nLine",
    "Zoë's Café",
    "ﬁ ligature",
    "Ǆemal",
    "ŉ",
    "ĳssel",
    "mañana",
    "façade",
];

#[test]
fn str_slug_matches_laravel_for_app_names() {
    let titles: Vec<String> = APP_NAMES
        .iter()
        .map(|s| s.replace("\\t", "\t").replace("\\n", "\n"))
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/php/slug.php");
    let mut child = Command::new("php")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("php must be installed (scripts/test installs php-cli and Laravel's packages)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&titles).expect("json").as_bytes())
        .expect("write titles");
    let output = child.wait_with_output().expect("php output");
    let laravel: Vec<String> = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "php printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let differences: Vec<String> = titles
        .iter()
        .zip(&laravel)
        .filter(|(title, expected)| slug::slug(title, '_') != **expected)
        .map(|(title, expected)| {
            format!(
                "{title:?}: laravel {expected:?}, ours {:?}",
                slug::slug(title, '_')
            )
        })
        .collect();
    assert_eq!(laravel.len(), titles.len());
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
