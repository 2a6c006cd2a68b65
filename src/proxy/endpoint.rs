//! The endpoint of a request as a bounded template: the `endpoint` label of the proxy's
//! metrics. Ids become `{id}`, and a path not in the list is `other`, so a client
//! cannot grow the series by inventing paths.
//!
//! The routes are `config/runway-api.toml`'s, generated from the pinned SDKs
//! ([`crate::runway_api`]).

/// The template of `GET`/`DELETE /v1/tasks/{id}`.
#[cfg(test)]
pub const TASK: &str = "/v1/tasks/{id}";
/// Every path not in the list.
pub const OTHER: &str = "other";

/// The template of `path` (without its query): the route of `config/runway-api.toml`
/// (the pinned SDKs' routes) it matches, else `other`.
pub fn endpoint(path: &str) -> &'static str {
    crate::runway_api::api().endpoint_template(path)
}

/// Whether a `POST` answered 2xx to a path whose [`endpoint`] is `template` creates a
/// task: a create endpoint of `config/runway-api.toml`, or a path the table does not know
/// (`other`: an endpoint newer than the pinned SDKs). A known route that creates no task
/// (`/v1/uploads` answers an upload's id, `/v1/workflows/{id}` an invocation's,
/// `/v1/organization/usage` a report) is not a create call, whatever id its answer
/// carries.
pub fn creates_tasks(template: &str) -> bool {
    let api = crate::runway_api::api();
    template == OTHER || api.create_endpoint("POST", template).is_some()
}

/// A request's path (without its query) and its [`endpoint`], found once for everything
/// that is asked of the request afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    path: String,
    endpoint: &'static str,
}

impl Target {
    pub fn new(path: String) -> Target {
        let endpoint = endpoint(&path);
        Target { path, endpoint }
    }

    /// The path's template ([`endpoint`]).
    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    /// [`creates_tasks`] of the path's template.
    pub fn creates_tasks(&self) -> bool {
        creates_tasks(self.endpoint)
    }

    /// [`task_id`] of the path.
    pub fn task_id(&self) -> Option<&str> {
        task_id(&self.path)
    }
}

/// The task id of a `/v1/tasks/{id}` path.
pub fn task_id(path: &str) -> Option<&str> {
    one_segment(path, "/v1/tasks/")
}

fn one_segment<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    path.strip_prefix(prefix)
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// The `method` label: the API's methods, any other as `other`.
pub fn method(m: &hyper::Method) -> &'static str {
    use hyper::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_bounded_templates() {
        for (path, want) in [
            ("/v1/tasks/17f20503-6c24-4c16-946b-35dbbce2af2f", TASK),
            ("/v1/tasks/", OTHER),
            ("/v1/tasks/a/b", OTHER),
            ("/v1/image_to_video", "/v1/image_to_video"),
            ("/v1/image_to_video/", OTHER),
            ("/v1/generate/video", "/v1/generate/video"),
            ("/v1/made_up", OTHER),
            ("/v1/organization/usage", "/v1/organization/usage"),
        ] {
            assert_eq!(endpoint(path), want, "{path}");
        }
        assert_eq!(task_id("/v1/tasks/abc"), Some("abc"));
        for (path, creates) in [
            ("/v1/image_to_video", true),
            ("/v1/generate/video", true),
            ("/v1/made_up", true),
            ("/v1/uploads", false),
            ("/v1/organization/usage", false),
            ("/v1/tasks/abc", false),
        ] {
            assert_eq!(Target::new(path.into()).creates_tasks(), creates, "{path}");
        }
        assert!(!creates_tasks(TASK));
        let target = Target::new("/v1/tasks/abc".into());
        assert_eq!((target.endpoint(), target.task_id()), (TASK, Some("abc")));
        assert!(!target.creates_tasks());
        assert!(Target::new("/v1/text_to_video".into()).creates_tasks());
        assert_eq!(task_id("/v1/tasks/abc/x"), None);
        let odd = hyper::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method(&odd), OTHER);
    }
}
