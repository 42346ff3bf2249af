# Who may call the service. Push services: the Pub/Sub (and Cloud Tasks) invoker identities.
# The api: a list of named principals. Never allUsers (see the variable's validation).
resource "google_cloud_run_v2_service_iam_binding" "invokers" {
  count = length(var.invokers) > 0 ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  members  = var.invokers
}
