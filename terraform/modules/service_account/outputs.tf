output "email" {
  description = "Service account email."
  value       = local.email
  depends_on  = [google_service_account.this]
}

output "iam_email" {
  description = "IAM member string: serviceAccount:EMAIL."
  value       = local.iam_email
  depends_on  = [google_service_account.this]
}

output "id" {
  description = "Fully qualified id: projects/PROJECT/serviceAccounts/EMAIL."
  value       = google_service_account.this.id
}
