from .synthetic_streets import SceneSize, generate, render_scene

__all__ = ['SceneSize', 'generate', 'render_scene']
