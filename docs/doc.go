// Package docs holds the project's documentation. It has no code: its
// tests keep packages.md true of the modules and the README's flags table
// true of main.go.
package docs
