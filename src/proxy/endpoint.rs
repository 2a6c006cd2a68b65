//! The endpoint of a request as a bounded template: the `endpoint` label of the proxy's
//! metrics. Ids become `{id}`, and a path not in the list is `other`, so a client
//! cannot grow the series by inventing paths.
//!
//! The list is today's API (`/work/shared/reference/runway-task-failures.md`); this one
//! function is where a fuller table plugs in.

/// The template of `GET`/`DELETE /v1/tasks/{id}`.
pub const TASK: &str = "/v1/tasks/{id}";
/// Every path not in the list.
pub const OTHER: &str = "other";

/// Paths that are their own template: the create endpoints and the organization's.
const FIXED: [&str; 23] = [
    "/v1/image_to_video",
    "/v1/text_to_video",
    "/v1/video_to_video",
    "/v1/text_to_image",
    "/v1/character_performance",
    "/v1/text_to_speech",
    "/v1/sound_effect",
    "/v1/speech_to_speech",
    "/v1/voice_isolation",
    "/v1/voice_dubbing",
    "/v1/video_to_audio",
    "/v1/video_to_hdr",
    "/v1/image_upscale",
    "/v1/video_upscale",
    "/v1/avatar_videos",
    "/v1/generate/video",
    "/v1/generate/image",
    "/v1/generate/audio",
    "/v1/organization",
    "/v1/organization/usage",
    "/v1/uploads",
    "/v1/realtime_sessions",
    "/v1/avatars",
];

/// Paths with one id after a prefix: `(prefix, template)`.
const WITH_ID: [(&str, &str); 4] = [
    ("/v1/tasks/", TASK),
    ("/v1/recipes/", "/v1/recipes/{recipe}"),
    ("/v1/workflows/", "/v1/workflows/{id}"),
    ("/v1/workflow_invocations/", "/v1/workflow_invocations/{id}"),
];

/// The template of `path` (without its query).
pub fn endpoint(path: &str) -> &'static str {
    if let Some(fixed) = FIXED.iter().find(|p| **p == path) {
        return fixed;
    }
    WITH_ID
        .iter()
        .find(|(prefix, _)| one_segment(path, prefix).is_some())
        .map_or(OTHER, |(_, template)| template)
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
            ("/v1/recipes/anything", "/v1/recipes/{recipe}"),
            ("/v1/made_up", OTHER),
            ("/v1/organization/usage", "/v1/organization/usage"),
        ] {
            assert_eq!(endpoint(path), want, "{path}");
        }
        assert_eq!(task_id("/v1/tasks/abc"), Some("abc"));
        assert_eq!(task_id("/v1/tasks/abc/x"), None);
        let odd = hyper::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method(&odd), OTHER);
    }
}
