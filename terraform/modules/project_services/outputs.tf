output "project_id" {
  description = "Project id, available once the APIs are enabled."
  value       = var.project_id
  depends_on  = [google_project_service.this]
}

output "number" {
  description = "Project number."
  value       = data.google_project.this.number
}

output "pubsub_service_agent" {
  description = "Email of the Pub/Sub service agent (it forwards dead letters and mints push OIDC tokens)."
  value       = "service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}
