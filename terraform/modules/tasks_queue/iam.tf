# Queue-level grants, e.g. roles/cloudtasks.enqueuer for the service that schedules tasks.
resource "google_cloud_tasks_queue_iam_binding" "this" {
  for_each = { for role, members in var.iam : role => members if length(members) > 0 }

  project  = var.project_id
  location = var.location
  name     = google_cloud_tasks_queue.this.name
  role     = each.key
  members  = each.value
}
