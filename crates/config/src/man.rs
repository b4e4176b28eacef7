//! `man/postconf.5`, generated from the parameter table so that the two cannot disagree
//! (a test compares the checked-in page with this output).

use crate::params::PARAMS;

fn roff_escape(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    // A line starting with . or ' would be taken as a request.
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The postconf(5) page text.
pub fn postconf5() -> String {
    let mut out = String::new();
    out.push_str(
        ".\\\" Generated from crates/config/src/params.rs by `postconf --man`; do not edit.\n",
    );
    out.push_str(".TH POSTCONF 5 \"\" \"oxipost\" \"File Formats\"\n");
    out.push_str(".SH NAME\npostconf \\- oxipost configuration parameters\n");
    out.push_str(".SH SYNOPSIS\n.B postconf\n.I parameter ...\n.br\n.B postconf \\-e\n.I \"parameter=value ...\"\n");
    out.push_str(".SH DESCRIPTION\n");
    out.push_str(
        "The file \\fImain.cf\\fR in the configuration directory holds the parameters \
of the oxipost mail system, with the syntax and the names of Postfix's main.cf. \
Each line is \\fIname\\fR = \\fIvalue\\fR; a line that starts with white space continues \
the previous one; lines that start with # are comments; the last definition of a name wins.\n",
    );
    out.push_str(
        ".PP\nA value may refer to other parameters: $name, ${name}, $(name); \
${name?value} is \\fIvalue\\fR when $name is not empty; ${name:value} is \\fIvalue\\fR \
when $name is empty; ${name?{value1}:{value2}} chooses between two values; $$ is a dollar sign. \
Expansion is recursive; a reference loop is an error.\n",
    );
    out.push_str(
        ".PP\nTimes are a number with an optional unit: s (seconds), m (minutes), \
h (hours), d (days), w (weeks). Lists are separated by white space and/or commas.\n",
    );
    out.push_str(".SH PARAMETERS\n");
    for p in PARAMS {
        out.push_str(&format!(".SS {}\n", roff_escape(p.name)));
        let default = if p.computed {
            "(computed from the host)".to_string()
        } else if p.default.is_empty() {
            "(empty)".to_string()
        } else {
            p.default.to_string()
        };
        out.push_str(&format!(
            "Type: {}. Default: {}\n.br\n{}\n",
            p.kind.name(),
            roff_escape(&default),
            roff_escape(p.description)
        ));
    }
    out.push_str(".SH SEE ALSO\npostconf(1), master(5), master(8), mailctl(1)\n");
    out
}
