//! `hookline dlq --url`: the same requests as the admin socket, through a
//! daemon's admin API (docs/openapi.json), from any host.

use anyhow::{Context, Result, bail};
use hookline_core::admin::{AdminRequest, AdminResponse, DeadLetterView, LetterFilter, Selector};
use serde::Deserialize;

/// A page of `GET /api/v1/dead-letters`.
#[derive(Deserialize)]
struct Page {
    dead_letters: Vec<DeadLetterView>,
    next: Option<String>,
}

/// `{"done": […], "refused": […]}`, or a dry run's
/// `{"dry_run": true, "dead_letters": […]}`.
#[derive(Deserialize)]
struct Done {
    #[serde(default)]
    done: Vec<String>,
    #[serde(default)]
    refused: Vec<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    dead_letters: Vec<DeadLetterView>,
}

/// A replay's or purge's answer as the socket gives it.
fn absorb(response: &mut AdminResponse, done: Done) {
    response.done = done.done;
    response.refused = done.refused;
    response.dry_run = done.dry_run;
    response.letters = done.dead_letters;
}

/// Sends `request` to the admin API at `base` and answers as the socket
/// would.
pub(crate) async fn ask(base: &str, token: Option<&str>, request: &AdminRequest) -> Result<AdminResponse> {
    let root = reqwest::Url::parse(base)
        .ok()
        .filter(|url| !url.cannot_be_a_base())
        .with_context(|| format!("--url {base:?} is not an http(s) URL, e.g. http://host:7079"))?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("cannot set up an HTTP client")?;
    // `/api/v1/dead-letters/SEGMENTS…` under the URL given, each segment
    // percent-encoded by `url` (an id typed by hand may hold anything).
    let call = |method: reqwest::Method, segments: &[&str]| {
        let mut url = root.clone();
        url.path_segments_mut()
            .expect("checked: the URL can be a base")
            .pop_if_empty()
            .extend(["api", "v1", "dead-letters"])
            .extend(segments);
        let mut builder = client.request(method, url);
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        builder
    };
    // The bulk body: the filter's conditions (unset ones null), all the
    // letters that pass them, and the request's own keys.
    let body = |filter: &LetterFilter, dry_run: bool, rate: Option<f64>| -> Result<String> {
        let mut body = serde_json::to_value(filter).context("a filter serialises")?;
        body["all"] = serde_json::json!(true);
        body["dry_run"] = serde_json::json!(dry_run);
        if let Some(rate) = rate {
            body["rate"] = serde_json::json!(rate);
        }
        Ok(body.to_string())
    };
    let mut response = AdminResponse::default();
    match request {
        AdminRequest::List { filter } => {
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![("limit", "500".to_string())];
                query.extend(cursor.clone().map(|c| ("cursor", c)));
                // The filter's unset conditions leave no parameter.
                let page: Page = read(call(reqwest::Method::GET, &[]).query(filter).query(&query), base).await?;
                response.letters.extend(page.dead_letters);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        AdminRequest::Show { id } => {
            let mut letter: serde_json::Value = read(call(reqwest::Method::GET, &[id]), base).await?;
            // The API gives the events as `payload`; the socket as text.
            let events = letter
                .as_object_mut()
                .and_then(|o| o.remove("payload"))
                .map(|p| p.to_string())
                .unwrap_or_default();
            let mut view: DeadLetterView =
                serde_json::from_value(letter).context("the admin API's dead letter is not what this CLI expects")?;
            view.events_json = events;
            response.letters.push(view);
        }
        AdminRequest::Replay {
            selector: Selector::Id(id),
            dry_run: false,
            ..
        } => absorb(
            &mut response,
            read(call(reqwest::Method::POST, &[id, "replay"]), base).await?,
        ),
        AdminRequest::Purge {
            selector: Selector::Id(id),
            dry_run: false,
            ..
        } => absorb(&mut response, read(call(reqwest::Method::DELETE, &[id]), base).await?),
        AdminRequest::Replay { .. } | AdminRequest::Purge { .. } => {
            let (selector, filter, dry_run) = request.target().expect("a replay or purge has a target");
            let (path, rate) = match request {
                AdminRequest::Replay { rate, .. } => ("replay", *rate),
                _ => ("purge", None),
            };
            let mut filter = filter.clone();
            match selector {
                Selector::Id(_) => bail!("a dry run takes filters, not an id: `dlq show ID` shows one letter"),
                Selector::App(app) => filter.app = Some(app.clone()),
                Selector::All => {}
            }
            let builder = call(reqwest::Method::POST, &[path])
                .header("content-type", "application/json")
                .body(body(&filter, dry_run, rate)?);
            absorb(&mut response, read(builder, base).await?);
        }
    }
    Ok(response)
}

/// Sends a request and reads its JSON answer; a 409 (some refused) is an
/// answer too, any other failure an error naming what the API said.
async fn read<T: serde::de::DeserializeOwned>(builder: reqwest::RequestBuilder, base: &str) -> Result<T> {
    let answer = builder.send().await.with_context(|| {
        format!("cannot reach the admin API at {base}: is admin.listen set there, and --url right?")
    })?;
    let status = answer.status();
    let text = answer.text().await.context("the admin API's answer broke off")?;
    if status.is_success() || status == reqwest::StatusCode::CONFLICT {
        return serde_json::from_str(&text)
            .with_context(|| format!("the admin API answered {status} with unexpected JSON"));
    }
    let error = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!(
            "the admin API refused the token ({status}): pass --token or HOOKLINE_ADMIN_TOKEN with admin.token's value"
        );
    }
    bail!("the admin API answered {status}: {error}")
}
