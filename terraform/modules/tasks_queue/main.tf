# One Cloud Tasks queue. Tasks are HTTP calls with an OIDC token; whoever creates them needs
# roles/cloudtasks.enqueuer here and roles/iam.serviceAccountUser on the token's account.

resource "google_cloud_tasks_queue" "this" {
  project  = var.project_id
  location = var.location
  name     = var.name

  retry_config {
    max_attempts       = var.retry.max_attempts
    min_backoff        = "${var.retry.min_backoff_seconds}s"
    max_backoff        = "${var.retry.max_backoff_seconds}s"
    max_doublings      = var.retry.max_doublings
    max_retry_duration = "${var.retry.max_retry_duration_seconds}s"
  }

  rate_limits {
    max_dispatches_per_second = var.rate_limits.max_dispatches_per_second
    max_concurrent_dispatches = var.rate_limits.max_concurrent_dispatches
  }

  stackdriver_logging_config {
    sampling_ratio = var.log_sampling_ratio
  }
}
