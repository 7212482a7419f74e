//! Removals that Docker makes at once and shoal's manager refuses while the tasks of
//! removed services are still stopping (networks, secrets, configs): `docker stack rm`
//! removes services and then, right away, what they used.

use super::Api;
use super::error::ApiResult;
use axum::http::StatusCode;
use shoal_api::control::ControlRequest;
use shoal_api::objects::Task;
use std::time::Duration;

/// How long a removal waits for stopping tasks to let go.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// Sends `req`; while it is refused and the object's only users (`uses`) are tasks on
/// their way out, waits for them and tries again. Any other refusal is answered at once.
pub async fn once_tasks_stop(
    api: &Api,
    req: ControlRequest,
    uses: impl Fn(&Task) -> bool,
) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let err = match api.control(req.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if err.status != StatusCode::BAD_REQUEST || tokio::time::Instant::now() >= deadline {
            return Err(err);
        }
        let tasks = super::tasks::list_all(api).await?;
        let users: Vec<&Task> = tasks
            .iter()
            .map(|t| &t.task)
            .filter(|t| !t.status.state.is_terminal() && uses(t))
            .collect();
        if users.is_empty() || users.iter().any(|t| !t.desired_state.is_terminal()) {
            return Err(err);
        }
        tokio::time::sleep(POLL).await;
    }
}
