//! The message templates (minijinja), compiled into the binary from `services/notifications/templates/`.
//!
//! One file per template and locale, `templates/<locale>/<name>.j2`, with four blocks: `subject`, `text` (the
//! plain part, also the webhook's `text`), `html` (the HTML part) and `sms`. Each file is loaded twice: as
//! `<locale>/<name>.html`, where everything printed is HTML-escaped (the `html` block is rendered from it), and
//! as `<locale>/<name>.txt`, unescaped (the other blocks).
//!
//! Guarantees: a parameter a template uses but the request lacks is an error (strict undefined), never an empty
//! string in a customer's e-mail; locales fall back from `pt-BR` to `pt` to [`DEFAULT_LOCALE`]; an unknown
//! template is an error. Both errors are permanent for the notification (it is dead-lettered with the reason).

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// The locale every template has.
pub const DEFAULT_LOCALE: &str = "en";

/// Every locale shipped.
pub const LOCALES: [&str; 2] = ["en", "de"];

/// Every template shipped, with its source per locale.
const SOURCES: &[(&str, &str, &str)] = &[
    (
        "en",
        "settlement_completed",
        include_str!("../templates/en/settlement_completed.j2"),
    ),
    (
        "de",
        "settlement_completed",
        include_str!("../templates/de/settlement_completed.j2"),
    ),
    (
        "en",
        "settlement_held",
        include_str!("../templates/en/settlement_held.j2"),
    ),
    (
        "de",
        "settlement_held",
        include_str!("../templates/de/settlement_held.j2"),
    ),
    (
        "en",
        "webhook_endpoint_disabled",
        include_str!("../templates/en/webhook_endpoint_disabled.j2"),
    ),
    (
        "de",
        "webhook_endpoint_disabled",
        include_str!("../templates/de/webhook_endpoint_disabled.j2"),
    ),
    (
        "en",
        "invoice_paid",
        include_str!("../templates/en/invoice_paid.j2"),
    ),
    (
        "de",
        "invoice_paid",
        include_str!("../templates/de/invoice_paid.j2"),
    ),
];

/// The names of every template shipped.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = SOURCES.iter().map(|(_, n, _)| *n).collect();
    names.dedup();
    names
}

/// A notification rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The locale actually used (after fallback).
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub sms: String,
}

/// Why a notification cannot be rendered (permanent).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("no template `{0}` (shipped: {shipped})", shipped = names().join(", "))]
    Unknown(String),
    #[error("template `{template}` ({locale}): {source:#}")]
    Render {
        template: String,
        locale: String,
        #[source]
        source: minijinja::Error,
    },
}

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// Compiles every shipped template (a syntax error is a bug caught by the tests).
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_trim_blocks(false);
        for (locale, name, source) in SOURCES {
            for ext in ["html", "txt"] {
                env.add_template_owned(format!("{locale}/{name}.{ext}"), *source)
                    .expect("shipped templates compile");
            }
        }
        Templates { env }
    }

    /// The locale of `template` to use for `requested`: itself, its language, or [`DEFAULT_LOCALE`].
    pub fn resolve_locale(&self, template: &str, requested: &str) -> Option<String> {
        let language = requested.split('-').next().unwrap_or(requested);
        [requested, language, DEFAULT_LOCALE]
            .into_iter()
            .find(|l| {
                self.env
                    .get_template(&format!("{l}/{template}.txt"))
                    .is_ok()
            })
            .map(str::to_string)
    }

    /// Renders `template` in `locale` (with fallback) with `parameters`.
    pub fn render(
        &self,
        template: &str,
        locale: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Rendered, TemplateError> {
        let locale = self
            .resolve_locale(template, locale)
            .ok_or_else(|| TemplateError::Unknown(template.to_string()))?;
        let err = |source| TemplateError::Render {
            template: template.to_string(),
            locale: locale.clone(),
            source,
        };
        let block = |ext: &str, block: &str| -> Result<String, TemplateError> {
            let t = self
                .env
                .get_template(&format!("{locale}/{template}.{ext}"))
                .map_err(err)?;
            let mut captured = t.render_captured(parameters).map_err(err)?;
            let text = captured
                .with_state_mut(|state| state.render_block(block))
                .map_err(err)?;
            Ok(text.trim().to_string())
        };
        Ok(Rendered {
            subject: block("txt", "subject")?,
            text: block("txt", "text")?,
            html: block("html", "html")?,
            sms: block("txt", "sms")?,
            locale: locale.clone(),
        })
    }
}

/// The address part of `from` (`Name <a@b>` or `a@b`), checked; its domain ends every `Message-ID`.
pub fn from_address(from: &str) -> anyhow::Result<lettre::message::Mailbox> {
    from.parse()
        .map_err(|e| anyhow::anyhow!("email.from `{from}` is not a mailbox: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(template: &str) -> BTreeMap<String, String> {
        let all = [
            ("settlement_id", "set_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
            ("invoice_id", "inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e"),
            ("gross_amount", "100.00"),
            ("fee_amount", "1.00"),
            ("net_amount", "99.00"),
            ("currency", "EUR"),
            ("reason", "merchant suspended <review>"),
            ("endpoint_id", "whep_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
            ("disabled_at", "2026-11-30T10:00:00Z"),
            ("details", "answered 410 & gone"),
            ("amount_due", "16.49"),
            ("amount_paid", "16.50"),
            ("overpaid_amount", "0.01"),
            ("crypto_currency", "USDT"),
            ("late_payment", "no"),
        ];
        let wanted: &[&str] = match template {
            "settlement_completed" => &[
                "settlement_id",
                "invoice_id",
                "gross_amount",
                "fee_amount",
                "net_amount",
                "currency",
            ],
            "settlement_held" => &[
                "settlement_id",
                "invoice_id",
                "net_amount",
                "currency",
                "reason",
            ],
            "webhook_endpoint_disabled" => &["endpoint_id", "reason", "disabled_at", "details"],
            "invoice_paid" => &[
                "invoice_id",
                "amount_due",
                "amount_paid",
                "overpaid_amount",
                "crypto_currency",
                "late_payment",
            ],
            other => panic!("a template without test parameters: {other}"),
        };
        all.iter()
            .filter(|(k, _)| wanted.contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_template_renders_in_every_locale_shipped() {
        let templates = Templates::new();
        for name in names() {
            for locale in LOCALES {
                let r = templates
                    .render(name, locale, &parameters(name))
                    .unwrap_or_else(|e| panic!("{name} {locale}: {e}"));
                assert_eq!(r.locale, locale);
                for (part, text) in [
                    ("subject", &r.subject),
                    ("text", &r.text),
                    ("html", &r.html),
                    ("sms", &r.sms),
                ] {
                    assert!(!text.is_empty(), "{name} {locale} {part} is empty");
                    assert!(!text.contains("{{"), "{name} {locale} {part}: {text}");
                }
                assert!(!r.subject.contains('\n'), "{name} {locale}: {}", r.subject);
                assert!(r.html.starts_with("<!doctype html>"), "{name} {locale}");
                assert!(
                    r.html.contains(&format!("lang=\"{locale}\"")),
                    "{name} {locale}"
                );
            }
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let r = Templates::new()
            .render("settlement_held", "en", &parameters("settlement_held"))
            .unwrap();
        assert!(
            r.html.contains("merchant suspended &lt;review&gt;"),
            "{}",
            r.html
        );
        assert!(r.text.contains("merchant suspended <review>"), "{}", r.text);
    }

    #[test]
    fn a_missing_parameter_is_an_error_not_an_empty_string() {
        let mut p = parameters("settlement_completed");
        p.remove("net_amount");
        let err = Templates::new()
            .render("settlement_completed", "en", &p)
            .unwrap_err();
        assert!(matches!(err, TemplateError::Render { .. }), "{err}");
    }

    #[test]
    fn locales_fall_back_to_the_language_then_english() {
        let t = Templates::new();
        assert_eq!(
            t.resolve_locale("settlement_completed", "de-AT").as_deref(),
            Some("de")
        );
        assert_eq!(
            t.resolve_locale("settlement_completed", "pt-BR").as_deref(),
            Some("en")
        );
        assert!(t.resolve_locale("no_such_template", "en").is_none());
        assert!(matches!(
            t.render("no_such_template", "en", &BTreeMap::new()),
            Err(TemplateError::Unknown(_))
        ));
    }
}
