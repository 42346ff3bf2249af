output "id" {
  description = "Topic id: projects/PROJECT/topics/NAME."
  value       = google_pubsub_topic.this.id
}

output "name" {
  description = "Topic name."
  value       = google_pubsub_topic.this.name
}

output "push_subscription_ids" {
  description = "Push subscription ids by name."
  value       = { for k, s in google_pubsub_subscription.push : k => s.id }
}

output "pull_subscription_ids" {
  description = "Pull subscription ids by name."
  value       = { for k, s in google_pubsub_subscription.pull : k => s.id }
}
