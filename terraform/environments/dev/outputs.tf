output "api_url" {
  description = "URL of the api; call it with an identity token of one of api_invokers."
  value       = module.cloudagents.api_url
}

output "topics" {
  description = "Topic ids by name."
  value       = module.cloudagents.topics
}

output "dead_letter_topics" {
  description = "Dead-letter topics and their pull subscriptions."
  value       = module.cloudagents.dead_letter_topics
}

output "service_urls" {
  description = "Cloud Run URL of every service."
  value       = module.cloudagents.service_urls
}

output "secrets" {
  description = "Secrets to add the model API keys to."
  value       = module.cloudagents.secrets
}
